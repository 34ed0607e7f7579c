//! OpAMP messages (the Open Agent Management Protocol), generated at build time
//! from `proto/opamp/*.proto`, which follow the specification's field numbers.
//!
//! The collector serves them at `/v1/opamp` (plain HTTP: one `AgentToServer`
//! per POST, one `ServerToAgent` in the answer; WebSocket: one message per
//! binary frame after a one-byte header of 0); the agent is a client.

#![allow(missing_docs, clippy::all, unreachable_pub)]

include!(concat!(env!("OUT_DIR"), "/opamp.proto.rs"));

/// The content type OpAMP's plain-HTTP transport uses in both directions.
pub const CONTENT_TYPE: &str = "application/x-protobuf";

/// The WebSocket transport prefixes every message with this header byte
/// (a varint 0: no further header fields in this protocol version).
pub const WS_HEADER: u8 = 0;

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn field_numbers_match_the_specification_on_the_wire() {
        let msg = AgentToServer {
            instance_uid: vec![1; 16],
            sequence_num: 5,
            capabilities: 0x1003,
            ..Default::default()
        };
        let mut want = vec![0x0a, 0x10];
        want.extend([1u8; 16]);
        want.extend([0x10, 0x05, 0x20, 0x83, 0x20]);
        assert_eq!(msg.encode_to_vec(), want);
        assert_eq!(AgentToServer::decode(want.as_slice()).unwrap(), msg);
    }

    #[test]
    fn remote_config_round_trips_with_its_hash() {
        let mut files = std::collections::HashMap::new();
        files.insert(
            String::new(),
            AgentConfigFile {
                body: b"sources: {}\n".to_vec(),
                content_type: "text/yaml".into(),
            },
        );
        let msg = ServerToAgent {
            instance_uid: vec![7; 16],
            remote_config: Some(AgentRemoteConfig {
                config: Some(AgentConfigMap { config_map: files }),
                config_hash: vec![9; 32],
            }),
            capabilities: ServerCapabilities::AcceptsStatus as u64
                | ServerCapabilities::OffersRemoteConfig as u64,
            ..Default::default()
        };
        let back = ServerToAgent::decode(msg.encode_to_vec().as_slice()).unwrap();
        assert_eq!(back, msg);
        assert_eq!(back.capabilities, 3);
    }

    #[test]
    fn truncated_message_is_an_error_not_a_panic() {
        let bytes = AgentToServer {
            instance_uid: vec![1; 16],
            ..Default::default()
        }
        .encode_to_vec();
        assert!(AgentToServer::decode(&bytes[..5]).is_err());
    }
}
