//! The API layer: unwraps `invokeWithLayer`/`initConnection`, applies injected faults, counts
//! methods and answers from the [`World`](super::world::World).

use std::time::Duration;

use grammers_tl_types::{self as tl, Cursor, Deserializable, Identifiable, Serializable};
use tracing::debug;

use super::world::{ChatId, RpcFailure};
use super::{Fault, Shared, lock};

/// What the connection should do with one RPC.
pub(crate) enum Outcome {
    /// Answer with `rpc_result` carrying this body.
    Reply(Vec<u8>),
    /// Answer with `rpc_result(rpc_error)`.
    Error(RpcFailure),
    /// Close the connection without answering.
    Drop,
}

/// One processed RPC: its outcome, an optional delay before answering, and whether it was the
/// connection's `initConnection`.
pub(crate) struct Handled {
    pub outcome: Outcome,
    pub delay: Option<Duration>,
    pub init_connection: bool,
    pub method: &'static str,
}

/// Strips `invokeWithLayer`, `invokeWithoutUpdates` and `initConnection` wrappers.
fn unwrap_query(body: &[u8]) -> Result<(&[u8], bool), tl::deserialize::Error> {
    let mut rest = body;
    let mut init = false;
    loop {
        let mut c = Cursor::from_slice(rest);
        let id = u32::deserialize(&mut c)?;
        match id {
            tl::functions::InvokeWithLayer::<tl::functions::help::GetConfig>::CONSTRUCTOR_ID => {
                let _layer = i32::deserialize(&mut c)?;
            }
            tl::functions::InvokeWithoutUpdates::<tl::functions::help::GetConfig>::CONSTRUCTOR_ID => {}
            tl::functions::InitConnection::<tl::functions::help::GetConfig>::CONSTRUCTOR_ID => {
                init = true;
                let flags = u32::deserialize(&mut c)?;
                let _api_id = i32::deserialize(&mut c)?;
                for _ in 0..6 {
                    let _ = String::deserialize(&mut c)?;
                }
                if flags & 1 != 0 {
                    let _ = tl::enums::InputClientProxy::deserialize(&mut c)?;
                }
                if flags & 2 != 0 {
                    let _ = tl::enums::Jsonvalue::deserialize(&mut c)?;
                }
            }
            _ => return Ok((rest, init)),
        }
        rest = &rest[c.pos()..];
    }
}

fn parse<T: Deserializable>(inner: &[u8]) -> Result<T, RpcFailure> {
    let mut c = Cursor::from_slice(inner.get(4..).unwrap_or(&[]));
    T::deserialize(&mut c).map_err(|_| RpcFailure::new(400, "INPUT_REQUEST_INVALID"))
}

/// Handles one RPC for `user`.
pub(crate) fn handle(shared: &Shared, user: i64, body: &[u8]) -> Handled {
    let (inner, init_connection) = match unwrap_query(body) {
        Ok(x) => x,
        Err(_) => {
            return Handled {
                outcome: Outcome::Error(RpcFailure::new(400, "INPUT_METHOD_INVALID")),
                delay: None,
                init_connection: false,
                method: "?",
            };
        }
    };
    let id = match u32::from_bytes(inner) {
        Ok(id) => id,
        Err(_) => {
            return Handled {
                outcome: Outcome::Error(RpcFailure::new(400, "INPUT_METHOD_INVALID")),
                delay: None,
                init_connection,
                method: "?",
            };
        }
    };
    let method = tl::name_for_id(id);
    *lock(&shared.counters).entry(method.to_owned()).or_default() += 1;

    let mut delay = None;
    let fault = {
        let mut faults = lock(&shared.faults);
        let mut taken = None;
        if let Some(queue) = faults.get_mut(method)
            && let Some(front) = queue.front_mut()
        {
            taken = Some(front.fault.clone());
            front.remaining = front.remaining.saturating_sub(1);
            if front.remaining == 0 {
                queue.pop_front();
            }
        }
        taken
    };
    match fault {
        Some(Fault::Rpc { code, message }) => {
            debug!(method, code, %message, "fake dc: injected rpc error");
            return Handled {
                outcome: Outcome::Error(RpcFailure::new(code, message)),
                delay,
                init_connection,
                method,
            };
        }
        Some(Fault::Stall(d)) => delay = Some(d),
        Some(Fault::DropConnection) => {
            return Handled {
                outcome: Outcome::Drop,
                delay,
                init_connection,
                method,
            };
        }
        None => {}
    }

    // A revoked or duplicated key still completes the connection set-up (help.getConfig works
    // without authorization on Telegram too), but every API call fails.
    let auth_error = lock(&shared.auth_errors).get(&user).cloned();
    if let Some(err) = auth_error
        && id != tl::functions::help::GetConfig::CONSTRUCTOR_ID
    {
        return Handled {
            outcome: Outcome::Error(err),
            delay,
            init_connection,
            method,
        };
    }

    let outcome = match dispatch(shared, user, id, inner) {
        Ok(body) => Outcome::Reply(body),
        Err(e) => Outcome::Error(e),
    };
    Handled {
        outcome,
        delay,
        init_connection,
        method,
    }
}

fn dispatch(shared: &Shared, user: i64, id: u32, inner: &[u8]) -> Result<Vec<u8>, RpcFailure> {
    use tl::functions as f;
    let world = lock(&shared.world);
    match id {
        f::help::GetConfig::CONSTRUCTOR_ID => Ok(shared.config_tl().to_bytes()),
        f::users::GetUsers::CONSTRUCTOR_ID => {
            let req: f::users::GetUsers = parse(inner)?;
            Ok(world.get_users(user, &req.id).to_bytes())
        }
        f::updates::GetState::CONSTRUCTOR_ID => world
            .state(user)
            .map(|s| tl::enums::updates::State::State(s).to_bytes())
            .ok_or_else(|| RpcFailure::new(401, "AUTH_KEY_UNREGISTERED")),
        f::updates::GetDifference::CONSTRUCTOR_ID => {
            let req: f::updates::GetDifference = parse(inner)?;
            world.get_difference(user, &req).map(|d| d.to_bytes())
        }
        f::updates::GetChannelDifference::CONSTRUCTOR_ID => {
            let req: f::updates::GetChannelDifference = parse(inner)?;
            world
                .get_channel_difference(user, &req)
                .map(|d| d.to_bytes())
        }
        f::messages::GetDialogs::CONSTRUCTOR_ID => {
            let req: f::messages::GetDialogs = parse(inner)?;
            world.get_dialogs(user, &req).map(|d| d.to_bytes())
        }
        f::messages::GetHistory::CONSTRUCTOR_ID => {
            let req: f::messages::GetHistory = parse(inner)?;
            world.get_history(user, &req).map(|d| d.to_bytes())
        }
        f::messages::GetForumTopics::CONSTRUCTOR_ID => {
            let req: f::messages::GetForumTopics = parse(inner)?;
            world.get_forum_topics(user, &req).map(|d| d.to_bytes())
        }
        f::messages::GetMessages::CONSTRUCTOR_ID => {
            let req: f::messages::GetMessages = parse(inner)?;
            world
                .get_messages(user, None, &req.id)
                .map(|d| d.to_bytes())
        }
        f::channels::GetMessages::CONSTRUCTOR_ID => {
            let req: f::channels::GetMessages = parse(inner)?;
            world
                .get_messages(user, Some(&req.channel), &req.id)
                .map(|d| d.to_bytes())
        }
        f::channels::GetChannels::CONSTRUCTOR_ID => {
            let req: f::channels::GetChannels = parse(inner)?;
            let ids = req.id.iter().filter_map(|c| match c {
                tl::enums::InputChannel::Channel(c) => Some(ChatId::Channel(c.channel_id)),
                tl::enums::InputChannel::FromMessage(c) => Some(ChatId::Channel(c.channel_id)),
                tl::enums::InputChannel::Empty => None,
            });
            Ok(
                tl::enums::messages::Chats::Chats(tl::types::messages::Chats {
                    chats: world.get_chats(ids),
                })
                .to_bytes(),
            )
        }
        f::messages::GetChats::CONSTRUCTOR_ID => {
            let req: f::messages::GetChats = parse(inner)?;
            Ok(
                tl::enums::messages::Chats::Chats(tl::types::messages::Chats {
                    chats: world.get_chats(req.id.iter().map(|&id| ChatId::Group(id))),
                })
                .to_bytes(),
            )
        }
        _ => {
            let name = tl::name_for_id(id);
            debug!(method = name, "fake dc: method not implemented");
            lock(&shared.unimplemented).push(name.to_owned());
            Err(RpcFailure::new(400, "METHOD_NOT_IMPLEMENTED_FAKE_DC"))
        }
    }
}
