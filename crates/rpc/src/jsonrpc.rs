//! JSON-RPC 2.0 envelopes: parsing request bodies (single and batch) into calls, and
//! building responses. No I/O: bytes in, calls and response values out.

use serde_json::{json, Map, Value};

/// JSON-RPC's standard error codes.
pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;

/// A JSON-RPC error object.
#[derive(Clone, Debug, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
    pub fn with_data(mut self, data: Value) -> Self {
        self.data = Some(data);
        self
    }
    pub fn parse_error() -> Self {
        Self::new(PARSE_ERROR, "Parse error")
    }
    pub fn invalid_request(detail: &str) -> Self {
        // jsonrpc-core (which Solana uses) says just "Invalid request"; the detail helps
        // whoever is debugging a client and costs nothing.
        Self::new(INVALID_REQUEST, "Invalid request").with_data(Value::String(detail.into()))
    }
    pub fn method_not_found() -> Self {
        Self::new(METHOD_NOT_FOUND, "Method not found")
    }
    pub fn invalid_params(detail: impl std::fmt::Display) -> Self {
        Self::new(INVALID_PARAMS, format!("Invalid params: {detail}"))
    }

    /// The metric label for this rejection.
    pub fn reason(&self) -> &'static str {
        match self.code {
            PARSE_ERROR => "parse_error",
            INVALID_REQUEST => "invalid_request",
            METHOD_NOT_FOUND => "method_not_found",
            INVALID_PARAMS => "invalid_params",
            INTERNAL_ERROR => "internal_error",
            _ => "server_error",
        }
    }

    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("code".into(), json!(self.code));
        obj.insert("message".into(), json!(self.message));
        if let Some(d) = &self.data {
            obj.insert("data".into(), d.clone());
        }
        Value::Object(obj)
    }
}

/// A request id: a string, a number or null. Notifications have none.
pub type Id = Value;

/// One well-formed call.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// `None` for a notification (no response is sent).
    pub id: Option<Id>,
    pub method: String,
    /// `Value::Null` when absent, else an array or an object.
    pub params: Value,
}

/// The body of a request: one item or a batch, each item a call or an envelope error.
#[derive(Debug, PartialEq)]
pub enum Request {
    Single(Result<Call, (Id, RpcError)>),
    Batch(Vec<Result<Call, (Id, RpcError)>>),
}

/// Parses a request body. A body that is not JSON, or an empty or oversized batch, is
/// one error for the whole body.
pub fn parse_body(body: &[u8], max_batch_len: usize) -> Result<Request, RpcError> {
    let value: Value = serde_json::from_slice(body).map_err(|_| RpcError::parse_error())?;
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(RpcError::invalid_request("empty batch"));
            }
            if items.len() > max_batch_len {
                return Err(RpcError::invalid_request(&format!(
                    "batch of {} calls exceeds the limit of {max_batch_len}",
                    items.len()
                )));
            }
            Ok(Request::Batch(items.into_iter().map(parse_call).collect()))
        }
        other => Ok(Request::Single(parse_call(other))),
    }
}

fn parse_call(value: Value) -> Result<Call, (Id, RpcError)> {
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            RpcError::invalid_request("a call must be an object"),
        ));
    };
    let id = match obj.remove("id") {
        None => None,
        Some(v @ (Value::Null | Value::String(_) | Value::Number(_))) => Some(v),
        Some(_) => {
            return Err((
                Value::Null,
                RpcError::invalid_request("id must be a string, a number or null"),
            ))
        }
    };
    let err_id = id.clone().unwrap_or(Value::Null);
    let fail = |detail: &str| Err((err_id.clone(), RpcError::invalid_request(detail)));
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        _ => return fail("\"jsonrpc\" must be \"2.0\""),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        _ => return fail("\"method\" must be a string"),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => Value::Null,
        Some(p @ (Value::Array(_) | Value::Object(_))) => p,
        Some(_) => return fail("\"params\" must be an array or an object"),
    };
    Ok(Call { id, method, params })
}

/// A success response.
pub fn response_ok(id: Id, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "result": result, "id": id })
}

/// An error response.
pub fn response_err(id: Id, error: &RpcError) -> Value {
    json!({ "jsonrpc": "2.0", "error": error.to_value(), "id": id })
}

/// Positional parameters, as Solana's methods take them: `params` must be absent or an
/// array of at most `max` entries.
pub fn positional(params: &Value, max: usize) -> Result<Vec<Value>, RpcError> {
    match params {
        Value::Null => Ok(Vec::new()),
        Value::Array(items) if items.len() <= max => Ok(items.clone()),
        Value::Array(items) => Err(RpcError::invalid_params(format!(
            "expected at most {max} parameters, got {}",
            items.len()
        ))),
        Value::Object(_) => Err(RpcError::invalid_params(
            "expected an array of positional parameters",
        )),
        _ => Err(RpcError::invalid_params("invalid type")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_single_and_batch() {
        let r = parse_body(br#"{"jsonrpc":"2.0","id":1,"method":"getSlot"}"#, 10).unwrap();
        let Request::Single(Ok(call)) = r else {
            panic!("{r:?}")
        };
        assert_eq!(call.method, "getSlot");
        assert_eq!(call.id, Some(json!(1)));
        let r = parse_body(
            br#"[{"jsonrpc":"2.0","id":"a","method":"x","params":[1]},{"jsonrpc":"2.0","method":"y"},5]"#,
            10,
        )
        .unwrap();
        let Request::Batch(items) = r else { panic!() };
        assert_eq!(items.len(), 3);
        assert!(items[0].is_ok());
        assert_eq!(items[1].as_ref().unwrap().id, None);
        assert_eq!(items[2].as_ref().unwrap_err().1.code, INVALID_REQUEST);
    }

    #[test]
    fn rejects_envelopes() {
        assert_eq!(parse_body(b"{", 10).unwrap_err().code, PARSE_ERROR);
        assert_eq!(parse_body(b"[]", 10).unwrap_err().code, INVALID_REQUEST);
        assert_eq!(parse_body(b"[1,2,3]", 2).unwrap_err().code, INVALID_REQUEST);
        for body in [
            r#"{"id":1,"method":"getSlot"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"getSlot"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"getSlot","params":"x"}"#,
            r#"{"jsonrpc":"2.0","id":[1],"method":"getSlot"}"#,
            r#""hello""#,
        ] {
            let Ok(Request::Single(Err((_, e)))) = parse_body(body.as_bytes(), 10) else {
                panic!("{body}")
            };
            assert_eq!(e.code, INVALID_REQUEST, "{body}");
        }
    }
}
