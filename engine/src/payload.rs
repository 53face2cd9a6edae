//! Rules for a publication's payload that the wire decoders cannot know:
//! how deeply its JSON may nest (`server.json_depth_max`). One check for
//! every door (client `publish` and `send`, the API's publish routes), so
//! nothing stored is too deep for the encoders that render it back.

use ringcast_protocol::client::json_depth;

use crate::config::Config;

/// Refuses JSON `data` nested deeper than `server.json_depth_max`, with
/// the reason; opaque (`b64data`) payloads have no depth.
pub fn check(config: &Config, data: &[u8], data_is_json: bool) -> Result<(), String> {
    if !data_is_json {
        return Ok(());
    }
    let limit = config.server.json_depth_max;
    let depth = json_depth(data);
    if depth > limit {
        return Err(format!(
            "data nests {depth} levels deep; at most {limit} (server.json_depth_max)"
        ));
    }
    Ok(())
}
