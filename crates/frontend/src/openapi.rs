//! The OpenAPI document: what utoipa generates from the handlers, refined with what the
//! handlers check but the types do not say — name patterns, ids as UUIDs, bounds, the settings'
//! shape — and with links between operations (a created queue is published to; a published
//! message is read, discarded, redriven, named as a parent; an added subscriber is read,
//! changed, paused, resumed, given a new secret, removed), so
//! that a client or a fuzzer can follow real resources from one call to the next.

use serde_json::{Value, json};

use crate::limits;

/// Queue names as the API accepts them.
const QUEUE_NAME_PATTERN: &str = "^[A-Za-z0-9._-]{1,128}$";
/// Event types as publishes give them (`Syncbrok-Type`, a batch entry's `type`).
const EVENT_TYPE_PATTERN: &str = "^[A-Za-z0-9._:/-]{1,128}$";
/// A subscriber's type pattern: an event type, or a prefix of one followed by `*`.
const TYPE_PATTERN_PATTERN: &str = "^([A-Za-z0-9._:/-]{1,128}|[A-Za-z0-9._:/-]{0,127}[*])$";
/// A duration as settings take it: digits and a unit.
const SPAN_PATTERN: &str = "^[0-9]{1,12}(ms|s|m|h|d)$";

/// The document served at `/openapi.json`.
pub fn document() -> Value {
    let mut doc = serde_json::to_value(crate::openapi()).unwrap_or_else(|_| json!({}));
    refine_parameters(&mut doc);
    describe_settings(&mut doc);
    describe_subscriber(&mut doc);
    describe_batch(&mut doc);
    add_links(&mut doc);
    doc
}

/// Path, query and header parameters with the constraints the handlers apply.
fn refine_parameters(doc: &mut Value) {
    let Some(paths) = doc.get_mut("paths").and_then(Value::as_object_mut) else {
        return;
    };
    for (path, ops) in paths.iter_mut() {
        let Some(ops) = ops.as_object_mut() else {
            continue;
        };
        for op in ops.values_mut() {
            let Some(params) = op.get_mut("parameters").and_then(Value::as_array_mut) else {
                continue;
            };
            for p in params {
                let name = p["name"].as_str().unwrap_or_default().to_owned();
                let schema = match (name.as_str(), path.contains("/subscribers/")) {
                    ("queue", _) => json!({
                        "type": "string", "pattern": QUEUE_NAME_PATTERN,
                        "minLength": 1, "maxLength": 128
                    }),
                    ("id", true) => json!({"type": "string", "pattern": "^[0-9]{1,19}$"}),
                    ("id", false) | ("after", _) | ("syncbrok-parent", _) => {
                        json!({"type": "string", "format": "uuid"})
                    }
                    ("limit", _) if path.ends_with("/lineage") => json!({
                        "type": "integer", "minimum": 1,
                        "maximum": space::limits::LINEAGE_NODES_MAX
                    }),
                    ("up" | "down", _) => json!({
                        "type": "integer", "minimum": 0,
                        "maximum": space::limits::LINEAGE_LEVELS_MAX
                    }),
                    ("limit", _) => json!({
                        "type": "integer", "minimum": 1, "maximum": limits::PAGE_MAX
                    }),
                    ("state", _) => json!({
                        "type": "string",
                        "enum": ["scheduled", "waiting", "ready", "delivering", "delivered", "dead"]
                    }),
                    ("syncbrok-type", _) => {
                        json!({"type": "string", "pattern": EVENT_TYPE_PATTERN})
                    }
                    ("syncbrok-delay", _) => json!({"type": "string", "pattern": SPAN_PATTERN}),
                    ("syncbrok-deliver-at", _) => {
                        json!({"type": "string", "format": "date-time"})
                    }
                    ("idempotency-key", _) => json!({
                        "type": "string", "minLength": 1,
                        "maxLength": space::limits::IDEMPOTENCY_KEY_BYTES_MAX,
                        "pattern": "^[!-~]+$"
                    }),
                    _ => continue,
                };
                p["schema"] = schema;
            }
        }
    }
}

/// The body of `PUT /v1/queues/{queue}`: every setting, with its bounds.
fn describe_settings(doc: &mut Value) {
    let span = json!({"type": "string", "pattern": SPAN_PATTERN});
    let settings = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "retry": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "max_attempts": {"type": "integer", "minimum": 0, "maximum": 1000},
                    "initial_backoff": span, "max_backoff": span
                }
            },
            "delivery_timeout": span,
            "retention": {
                "type": "object", "additionalProperties": false,
                "properties": {"delivered": span, "dead": span}
            },
            "limits": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "max_messages": {"type": "integer", "minimum": 0},
                    "max_bytes": {"type": "integer", "minimum": 0}
                }
            },
            "on_parent_dead": {"type": "string", "enum": ["wait", "dead_letter", "deliver"]},
            "causality": {"type": "string", "enum": ["global", "per_subscriber"]},
            "idempotency": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "window": span,
                    "max_keys": {
                        "type": "integer", "minimum": 1,
                        "maximum": space::settings::bounds::IDEMPOTENCY_KEYS_MAX
                    }
                }
            }
        }
    });
    let body = &mut doc["paths"]["/v1/queues/{queue}"]["put"]["requestBody"]["content"]["application/json"]
        ["schema"];
    if body.is_object() {
        *body = settings;
    }
}

/// The body of `POST /v1/queues/{queue}/subscribers`.
fn describe_subscriber(doc: &mut Value) {
    let subscriber = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["endpoint"],
        "properties": {
            "endpoint": {
                "type": "string", "format": "uri", "maxLength": 2048,
                "pattern": "^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[!-~]*)?$"
            },
            "handler": {"type": "string", "enum": ["webhook", "legacy"]},
            "secret": {"type": "string", "pattern": "^whsec_([A-Za-z0-9+/]{4})+$"},
            "max_in_flight": {
                "type": "integer", "minimum": 1, "maximum": space::limits::MAX_IN_FLIGHT_MAX
            },
            "batch": {
                "type": "object",
                "additionalProperties": false,
                "properties": {
                    "max_messages": {
                        "type": "integer", "minimum": 1,
                        "maximum": space::limits::DELIVERY_BATCH_MESSAGES_MAX
                    },
                    "max_bytes": {
                        "type": "integer", "minimum": 1,
                        "maximum": space::limits::DELIVERY_BATCH_BYTES_MAX
                    }
                }
            },
            "headers": {
                "type": "object",
                "description": "Sent with every request to the subscriber; names the broker sets itself (content-type, host, webhook-*, ce-*, syncbrok-*, …) are refused with 400; values are never shown back.",
                "maxProperties": space::limits::SUBSCRIBER_HEADERS_MAX,
                "propertyNames": {"pattern": "^[A-Za-z0-9!#$%&'*+.^_`|~-]{1,64}$"},
                "additionalProperties": {"type": "string", "pattern": "^[!-~]([ -~]*[!-~])?$"}
            },
            "rate_limit": rate_limit(),
            "types": types()
        }
    });
    let patch = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "rate_limit": {"oneOf": [rate_limit(), {"type": "null"}]},
            "types": {"oneOf": [types(), {"type": "null"}]}
        }
    });
    let rotation = json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["secret"],
        "properties": {
            "secret": {"type": "string", "pattern": "^whsec_([A-Za-z0-9+/]{4})+$"},
            "grace": {"type": "string", "pattern": SPAN_PATTERN, "default": "24h"}
        }
    });
    for (path, method, schema) in [
        ("/v1/queues/{queue}/subscribers", "post", subscriber),
        ("/v1/queues/{queue}/subscribers/{id}", "patch", patch),
        (
            "/v1/queues/{queue}/subscribers/{id}/secret",
            "post",
            rotation,
        ),
    ] {
        let body =
            &mut doc["paths"][path][method]["requestBody"]["content"]["application/json"]["schema"];
        if !body.is_null() {
            *body = schema;
        }
    }
}

/// A subscriber's `types` filter.
fn types() -> Value {
    json!({
        "type": "array",
        "description": "Event types it takes: exact names, or prefixes followed by *.",
        "minItems": 1,
        "maxItems": space::limits::TYPE_FILTERS_MAX,
        "uniqueItems": true,
        "items": {"type": "string", "pattern": TYPE_PATTERN_PATTERN}
    })
}

/// A subscriber's `rate_limit`.
fn rate_limit() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "required": ["per_second"],
        "properties": {
            "per_second": {
                "type": "integer", "minimum": 1,
                "maximum": space::limits::RATE_LIMIT_PER_SECOND_MAX
            }
        }
    })
}

/// The body of `POST /v1/queues/{queue}/messages/batch`. (That `parent_index` names an
/// earlier entry is checked, not expressed here.)
fn describe_batch(doc: &mut Value) {
    let entry = json!({
        "type": "object",
        "additionalProperties": false,
        "allOf": [
            {"not": {"required": ["body", "body_base64"]}},
            {"not": {"required": ["parent", "parent_index"]}},
            {"anyOf": [
                {"not": {"anyOf": [{"required": ["parent"]}, {"required": ["parent_index"]}]}},
                {"not": {"anyOf": [{"required": ["parents"]}, {"required": ["parent_indexes"]}]}}
            ]}
        ],
        "properties": {
            "body": {"type": "string"},
            "body_base64": {"type": "string", "pattern": "^([A-Za-z0-9+/]{4})*$"},
            "content_type": {
                "type": "string", "pattern": "^[ -~]*$",
                "maxLength": space::limits::CONTENT_TYPE_BYTES_MAX
            },
            "parent": {"type": "string", "format": "uuid"},
            "parent_index": {
                "type": "integer", "minimum": 0,
                "maximum": space::limits::BATCH_MESSAGES_MAX - 1
            },
            "parents": {
                "type": "array", "maxItems": space::limits::PARENTS_MAX, "uniqueItems": true,
                "items": {"type": "string", "format": "uuid"}
            },
            "parent_indexes": {
                "type": "array", "maxItems": space::limits::PARENTS_MAX, "uniqueItems": true,
                "items": {
                    "type": "integer", "minimum": 0,
                    "maximum": space::limits::BATCH_MESSAGES_MAX - 1
                }
            },
            "idempotency_key": {
                "type": "string", "minLength": 1,
                "maxLength": space::limits::IDEMPOTENCY_KEY_BYTES_MAX
            },
            "type": {"type": "string", "pattern": EVENT_TYPE_PATTERN},
            "delay": {"type": "string", "pattern": SPAN_PATTERN},
            "deliver_at": {"type": "string", "format": "date-time"},
            "traceparent": {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$"
            },
            "tracestate": {
                "type": "string", "pattern": "^[ -~]+$",
                "maxLength": space::limits::TRACESTATE_BYTES_MAX
            }
        }
    });
    let batch = json!({
        "type": "object",
        "required": ["messages"],
        "properties": {
            "messages": {
                "type": "array", "minItems": 1,
                "maxItems": space::limits::BATCH_MESSAGES_MAX,
                "items": entry
            }
        }
    });
    let body = &mut doc["paths"]["/v1/queues/{queue}/messages/batch"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"];
    if !body.is_null() {
        *body = batch;
    }
}

/// Links from the answers that create resources to the calls that use them.
fn add_links(doc: &mut Value) {
    let queue = json!({"queue": "$request.path.queue"});
    let with = |extra: Value| {
        let mut p = queue.clone();
        if let (Some(p), Some(extra)) = (p.as_object_mut(), extra.as_object()) {
            p.extend(extra.clone());
        }
        p
    };
    let link = |op: &str, parameters: Value| json!({"operationId": op, "parameters": parameters});
    let queue_links = json!({
        "GetQueue": link("get_queue", queue.clone()),
        "Publish": link("publish", queue.clone()),
        "PublishBatch": link("publish_batch", queue.clone()),
        "AddSubscriber": link("add_subscriber", queue.clone()),
        "ListSubscribers": link("list_subscribers", queue.clone()),
        "ListMessages": link("list_messages", queue.clone()),
        "DeadLetters": link("dead_letters", queue.clone()),
        "RedriveAll": link("redrive_all", queue.clone()),
        "DeleteQueue": link("delete_queue", queue.clone()),
    });
    let message = |id: &str| {
        json!({
            "GetMessage": link("get_message", with(json!({"id": id}))),
            "GetBody": link("get_body", with(json!({"id": id}))),
            "Explain": link("explain", with(json!({"id": id}))),
            "Lineage": link("lineage", with(json!({"id": id}))),
            "Redrive": link("redrive", with(json!({"id": id}))),
            "Discard": link("discard", with(json!({"id": id}))),
            "PublishChild": link("publish", with(json!({"header.syncbrok-parent": id}))),
        })
    };
    let sub = || with(json!({"id": "$response.body#/id"}));
    let subscriber = json!({
        "GetSubscriber": link("get_subscriber", sub()),
        "UpdateSubscriber": link("update_subscriber", sub()),
        "PauseSubscriber": link("pause_subscriber", sub()),
        "ResumeSubscriber": link("resume_subscriber", sub()),
        "RotateSecret": link("rotate_secret", sub()),
        "RemoveSubscriber": link("remove_subscriber", sub()),
    });
    for (path, method, statuses, links) in [
        (
            "/v1/queues/{queue}",
            "put",
            &["200", "201"][..],
            queue_links,
        ),
        (
            "/v1/queues/{queue}/messages",
            "post",
            &["200", "201"][..],
            message("$response.body#/id"),
        ),
        (
            "/v1/queues/{queue}/messages/batch",
            "post",
            &["201"][..],
            message("$response.body#/ids/0"),
        ),
        (
            "/v1/queues/{queue}/subscribers",
            "post",
            &["200", "201"][..],
            subscriber,
        ),
    ] {
        for status in statuses {
            let response = &mut doc["paths"][path][method]["responses"][*status];
            if response.is_object() {
                response["links"] = links.clone();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_link_names_an_operation_of_the_document() {
        let doc = document();
        let mut ops = std::collections::HashSet::new();
        for ops_of_path in doc["paths"].as_object().unwrap().values() {
            for op in ops_of_path.as_object().unwrap().values() {
                ops.insert(op["operationId"].as_str().unwrap().to_owned());
            }
        }
        let mut links = 0;
        for ops_of_path in doc["paths"].as_object().unwrap().values() {
            for op in ops_of_path.as_object().unwrap().values() {
                for response in op["responses"].as_object().unwrap().values() {
                    for l in response["links"]
                        .as_object()
                        .into_iter()
                        .flat_map(|l| l.values())
                    {
                        assert!(ops.contains(l["operationId"].as_str().unwrap()), "{l}");
                        links += 1;
                    }
                }
            }
        }
        assert!(links >= 20, "{links} links");
        let queue = &doc["paths"]["/v1/queues/{queue}"]["get"]["parameters"][0]["schema"];
        assert_eq!(queue["pattern"], QUEUE_NAME_PATTERN);
        let settings = &doc["paths"]["/v1/queues/{queue}"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"];
        assert_eq!(
            settings["properties"]["retry"]["properties"]["max_backoff"]["pattern"],
            SPAN_PATTERN
        );
    }
}
