pub fn json_schema() -> serde_json::Value { todo!() }
