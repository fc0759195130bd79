//! How grammers' errors map onto what the account actor must do (see [`GatewayError`]).
//! (Placeholder until the full mapping lands.)

use grammers_mtsender::InvocationError;

use crate::telegram::gateway::GatewayError;

/// Sorts a grammers error by what the account actor must do about it.
pub fn classify(error: InvocationError) -> GatewayError {
    match &error {
        InvocationError::Rpc(rpc) => match rpc.name.as_str() {
            "FLOOD_WAIT" | "SLOWMODE_WAIT" | "FLOOD_PREMIUM_WAIT" => GatewayError::FloodWait {
                seconds: u64::from(rpc.value.unwrap_or(1)),
            },
            "AUTH_KEY_UNREGISTERED" | "SESSION_REVOKED" | "USER_DEACTIVATED" => {
                GatewayError::Revoked(rpc.name.clone())
            }
            "AUTH_KEY_DUPLICATED" => GatewayError::Duplicated,
            _ => GatewayError::Other(rpc.name.clone()),
        },
        InvocationError::Io(_) | InvocationError::Dropped(_) => {
            GatewayError::Network(error.to_string())
        }
        _ => GatewayError::Other(error.to_string()),
    }
}
