//! How grammers' errors map onto what the account actor must do (see [`GatewayError`]).
