//! (in progress: envelope, MCP client, fake Switchboard)
