//! REST as MCP: an OpenAPI 3 document read into tools, tool calls built into
//! HTTP requests (encoding, styles, validation, path injection), HTTP answers
//! turned into tool results, and the documents that must be refused.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use serde_json::{json, Value};
use tollgate_core::mcp::openapi::{tool_result, Api, HttpCall, OpenApiError, Operation};

/// A petstore: path, query and header parameters, a path-level parameter
/// overridden by one operation, `$ref`'d parameters, request bodies and
/// schemas (one of them cyclic), an operation without `operationId`, a
/// multipart upload, a cookie and an `Authorization` parameter.
fn petstore() -> Value {
    json!({
        "openapi": "3.0.3",
        "info": { "title": "Petstore", "version": "1.0.0" },
        "servers": [{ "url": "https://petstore.example.com/v1" }],
        "paths": {
            "/pets": {
                "get": {
                    "operationId": "listPets",
                    "summary": "List all pets",
                    "description": "Pets in the store, newest first.",
                    "parameters": [
                        { "name": "limit", "in": "query", "description": "How many pets to return",
                          "schema": { "type": "integer", "maximum": 100, "format": "int32" } },
                        { "name": "tags", "in": "query", "description": "Only pets with these tags",
                          "schema": { "type": "array", "items": { "type": "string" } } },
                        { "name": "status", "in": "query",
                          "schema": { "type": "string", "enum": ["available", "pending", "sold"] } },
                        { "name": "X-Request-Id", "in": "header", "schema": { "type": "string" } },
                        { "name": "session", "in": "cookie", "schema": { "type": "string" } },
                        { "name": "Authorization", "in": "header", "required": true, "schema": { "type": "string" } }
                    ],
                    "responses": { "200": { "description": "pets" } }
                },
                "post": {
                    "operationId": "createPet",
                    "summary": "Create a pet",
                    "requestBody": { "$ref": "#/components/requestBodies/PetBody" },
                    "responses": { "201": { "description": "created" } }
                }
            },
            "/pets/{petId}": {
                "parameters": [{ "$ref": "#/components/parameters/PetId" }],
                "get": {
                    "description": "One pet by its id.",
                    "responses": { "200": { "description": "the pet" } }
                },
                "put": {
                    "operationId": "updatePet",
                    "parameters": [
                        { "name": "petId", "in": "path", "required": true, "description": "The pet to replace",
                          "schema": { "type": "string" } }
                    ],
                    "requestBody": {
                        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Pet" } } }
                    },
                    "responses": { "200": { "description": "replaced" } }
                },
                "delete": {
                    "operationId": "deletePet",
                    "deprecated": true,
                    "parameters": [
                        { "name": "X-Confirm", "in": "header", "required": true, "schema": { "type": "boolean" } }
                    ],
                    "responses": { "204": { "description": "deleted" } }
                }
            },
            "/pets/{petId}/photo": {
                "post": {
                    "operationId": "uploadPhoto",
                    "parameters": [{ "$ref": "#/components/parameters/PetId" }],
                    "requestBody": {
                        "required": true,
                        "content": { "multipart/form-data": { "schema": { "type": "object" } } }
                    },
                    "responses": { "200": { "description": "uploaded" } }
                }
            },
            "/search": {
                "get": {
                    "operationId": "search",
                    "parameters": [
                        { "name": "filter", "in": "query", "style": "deepObject", "explode": true,
                          "schema": { "type": "object", "additionalProperties": { "type": "string" } } },
                        { "name": "ids", "in": "query", "explode": false,
                          "schema": { "type": "array", "items": { "type": "integer" } } },
                        { "name": "q", "in": "query",
                          "content": { "application/json": { "schema": { "type": "object" } } } },
                        { "name": "fuzzy", "in": "query", "schema": { "type": "boolean" } },
                        { "name": "ratio", "in": "query", "schema": { "type": "number", "exclusiveMinimum": true, "minimum": 0 } }
                    ],
                    "responses": { "200": { "description": "results" } }
                }
            }
        },
        "components": {
            "parameters": {
                "PetId": { "name": "petId", "in": "path", "required": true, "description": "The pet's id",
                           "schema": { "type": "string" } }
            },
            "requestBodies": {
                "PetBody": {
                    "description": "The pet to add",
                    "required": true,
                    "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Pet" } } }
                }
            },
            "schemas": {
                "Pet": {
                    "type": "object",
                    "required": ["id", "name"],
                    "discriminator": { "propertyName": "kind" },
                    "x-internal": true,
                    "properties": {
                        "id": { "type": "integer", "readOnly": true },
                        "name": { "type": "string", "example": "Rex" },
                        "tag": { "type": "string", "nullable": true },
                        "category": { "$ref": "#/components/schemas/Category" }
                    }
                },
                "Category": {
                    "type": "object",
                    "properties": {
                        "name": { "type": "string" },
                        "parent": { "$ref": "#/components/schemas/Category" }
                    }
                }
            }
        }
    })
}

fn api() -> Api {
    Api::from_document(&petstore()).unwrap()
}

fn op<'a>(api: &'a Api, name: &str) -> &'a Operation {
    api.operation(name).unwrap_or_else(|| panic!("no operation `{name}`"))
}

fn call(name: &str, args: Value) -> HttpCall {
    let api = api();
    op(&api, name).request(&args).unwrap_or_else(|e| panic!("{name} {args}: {e}"))
}

/// The message of a refused call.
fn refused(name: &str, args: Value) -> String {
    let api = api();
    match op(&api, name).request(&args) {
        Err(OpenApiError::Arguments(message)) => {
            assert!(message.starts_with(|c: char| c.is_ascii_lowercase()), "lowercase: {message}");
            message
        }
        other => panic!("{name} {args}: expected refused arguments, got {other:?}"),
    }
}

/// The pointer of a refused document, checked to name a field of it.
fn document_error(doc: &Value) -> (String, String) {
    match Api::from_document(doc) {
        Err(OpenApiError::Document { pointer, message }) => (pointer, message),
        other => panic!("expected a document error, got {other:?}"),
    }
}

fn path(call: &HttpCall) -> &str {
    &call.path_and_query
}

// ---------------------------------------------------------------------------
// The tool list

#[test]
fn every_operation_is_a_tool_but_the_upload() {
    let api = api();
    let mut names: Vec<&str> = api.operations.iter().map(|o| o.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["createPet", "deletePet", "get_pets_petId", "listPets", "search", "updatePet"]);
    for tool in api.tools() {
        let keys: Vec<&str> = tool.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(keys.len(), 3, "{tool}");
        assert!(tool["name"].is_string() && tool["description"].is_string(), "{tool}");
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
        assert_eq!(tool["inputSchema"]["additionalProperties"], false, "{tool}");
    }
    let get = op(&api, "get_pets_petId");
    assert_eq!((get.method(), get.path_template()), ("GET", "/pets/{petId}"));
}

#[test]
fn skipped_names_the_upload_the_cookie_and_the_authorization_header() {
    let api = api();
    let mut pointers: Vec<&str> = api.skipped.iter().map(|s| s.pointer.as_str()).collect();
    pointers.sort_unstable();
    assert_eq!(
        pointers,
        [
            "/paths/~1pets/get/parameters/4",
            "/paths/~1pets/get/parameters/5",
            "/paths/~1pets~1{petId}~1photo/post/requestBody",
        ]
    );
    let doc = petstore();
    for skipped in &api.skipped {
        assert!(doc.pointer(&skipped.pointer).is_some(), "{skipped:?}");
    }
    let upload = api.skipped.iter().find(|s| s.pointer.ends_with("requestBody")).unwrap();
    assert!(upload.reason.contains("uploadPhoto") && upload.reason.contains("multipart/form-data"), "{upload:?}");
}

#[test]
fn list_pets_takes_its_query_and_header_parameters() {
    let api = api();
    let tool = op(&api, "listPets").tool();
    assert_eq!(tool["name"], "listPets");
    assert_eq!(tool["description"], "List all pets\n\nPets in the store, newest first.");
    let schema = &tool["inputSchema"];
    assert_eq!(
        schema["properties"]["limit"],
        json!({ "type": "integer", "maximum": 100, "format": "int32", "description": "How many pets to return" })
    );
    assert_eq!(
        schema["properties"]["tags"],
        json!({ "type": "array", "items": { "type": "string" }, "description": "Only pets with these tags" })
    );
    assert_eq!(schema["properties"]["status"]["enum"], json!(["available", "pending", "sold"]));
    assert_eq!(schema["properties"]["X-Request-Id"], json!({ "type": "string" }));
    let mut keys: Vec<&str> = schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["X-Request-Id", "limit", "status", "tags"], "no cookie, no Authorization");
    assert!(schema.get("required").is_none(), "nothing required: {schema}");
}

#[test]
fn the_body_schema_is_inlined_and_made_json_schema() {
    let api = api();
    let schema = op(&api, "createPet").input_schema.clone();
    assert_eq!(schema["required"], json!(["body"]));
    let body = &schema["properties"]["body"];
    assert_eq!(body["description"], "The pet to add", "the request body's description");
    assert_eq!(body["type"], "object");
    assert_eq!(body["required"], json!(["name"]), "readOnly `id` is never sent");
    assert!(body["properties"].get("id").is_none(), "{body}");
    assert_eq!(body["properties"]["name"], json!({ "type": "string", "examples": ["Rex"] }));
    assert_eq!(body["properties"]["tag"], json!({ "type": ["string", "null"] }));
    assert!(body.get("discriminator").is_none() && body.get("x-internal").is_none(), "{body}");
    // Category refers to itself: inlined once, the cycle left as `{}`.
    let category = &body["properties"]["category"];
    assert_eq!(category["properties"]["name"], json!({ "type": "string" }));
    assert_eq!(category["properties"]["parent"], json!({}));
    assert!(!schema.to_string().contains("$ref"), "self-contained: {schema}");
}

#[test]
fn path_level_parameters_are_merged_and_overridden() {
    let api = api();
    let get = op(&api, "get_pets_petId").tool();
    assert_eq!(get["description"], "One pet by its id.");
    assert_eq!(get["inputSchema"]["properties"]["petId"]["description"], "The pet's id");
    assert_eq!(get["inputSchema"]["required"], json!(["petId"]));
    let put = op(&api, "updatePet").tool();
    assert_eq!(put["description"], "PUT /pets/{petId}", "no summary nor description");
    assert_eq!(put["inputSchema"]["properties"]["petId"]["description"], "The pet to replace");
    assert_eq!(put["inputSchema"]["required"], json!(["petId"]), "the body is optional here");
    let properties = put["inputSchema"]["properties"].as_object().unwrap();
    assert_eq!(properties.len(), 2, "petId once, and body: {properties:?}");
    let delete = op(&api, "deletePet").tool();
    assert_eq!(delete["description"], "DELETE /pets/{petId}\n\n(deprecated)");
    assert_eq!(delete["inputSchema"]["required"], json!(["petId", "X-Confirm"]));
}

#[test]
fn openapi_3_0_bounds_become_json_schema_ones() {
    let api = api();
    let ratio = &op(&api, "search").input_schema["properties"]["ratio"];
    assert_eq!(ratio, &json!({ "type": "number", "exclusiveMinimum": 0 }));
}

// ---------------------------------------------------------------------------
// Requests

#[test]
fn list_pets_encodes_its_query_and_header() {
    let built =
        call("listPets", json!({ "limit": 10, "tags": ["a b", "c&d=é"], "status": "sold", "X-Request-Id": "r-1" }));
    assert_eq!(built.method, "GET");
    assert_eq!(path(&built), "/pets?limit=10&tags=a%20b&tags=c%26d%3D%C3%A9&status=sold");
    assert_eq!(built.headers, [("x-request-id".to_owned(), "r-1".to_owned())]);
    assert_eq!(built.body, None);
}

#[test]
fn no_arguments_and_null_arguments_are_no_parameters() {
    for args in [json!({}), Value::Null, json!({ "limit": null, "tags": null })] {
        let built = call("listPets", args);
        assert_eq!(path(&built), "/pets");
        assert!(built.headers.is_empty());
    }
}

#[test]
fn numbers_and_booleans_are_sent_as_text() {
    let built = call("search", json!({ "fuzzy": true, "ratio": 0.5, "ids": [1, 2.0, 3] }));
    assert_eq!(path(&built), "/search?ids=1,2,3&fuzzy=true&ratio=0.5");
    let built = call("deletePet", json!({ "petId": "7", "X-Confirm": false }));
    assert_eq!(built.method, "DELETE");
    assert_eq!(path(&built), "/pets/7");
    assert_eq!(built.headers, [("x-confirm".to_owned(), "false".to_owned())]);
}

#[test]
fn query_styles_deep_object_and_json_content() {
    let built = call("search", json!({ "filter": { "color": "red", "size": "M L" }, "q": { "a": [1, "x"] } }));
    assert_eq!(
        path(&built),
        "/search?filter%5Bcolor%5D=red&filter%5Bsize%5D=M%20L&q=%7B%22a%22%3A%5B1%2C%22x%22%5D%7D"
    );
}

#[test]
fn create_pet_sends_a_json_body() {
    let body = json!({ "name": "Rex", "tag": null, "category": { "name": "dogs" } });
    let built = call("createPet", json!({ "body": body }));
    assert_eq!((built.method.as_str(), path(&built)), ("POST", "/pets"));
    assert_eq!(built.headers, [("content-type".to_owned(), "application/json".to_owned())]);
    let sent: Value = serde_json::from_slice(built.body.as_deref().unwrap()).unwrap();
    assert_eq!(sent, body);
    assert_eq!(built.body.unwrap(), serde_json::to_vec(&body).unwrap(), "compact json");
}

#[test]
fn an_optional_body_may_be_left_out() {
    let built = call("updatePet", json!({ "petId": "7" }));
    assert_eq!((built.method.as_str(), path(&built), &built.body), ("PUT", "/pets/7", &None));
    assert!(built.headers.is_empty());
}

#[test]
fn path_values_are_one_encoded_segment() {
    for (pet, expected) in [
        ("a/b", "/pets/a%2Fb"),
        ("../admin", "/pets/..%2Fadmin"),
        ("..%2Fadmin", "/pets/..%252Fadmin"),
        ("%2e%2e", "/pets/%252e%252e"),
        ("a?b#c", "/pets/a%3Fb%23c"),
        ("x;y=1", "/pets/x%3By%3D1"),
        ("café", "/pets/caf%C3%A9"),
        ("...", "/pets/..."),
        ("a b", "/pets/a%20b"),
    ] {
        assert_eq!(path(&call("get_pets_petId", json!({ "petId": pet }))), expected, "{pet}");
    }
}

#[test]
fn dot_segments_and_empty_segments_are_refused() {
    for pet in [".", ".."] {
        let message = refused("get_pets_petId", json!({ "petId": pet }));
        assert!(message.contains("`petId`") && message.contains("change the request path"), "{message}");
    }
    let message = refused("get_pets_petId", json!({ "petId": "" }));
    assert_eq!(message, "argument `petId` must not be empty: it is a segment of the request path");
}

#[test]
fn missing_required_arguments_are_all_named() {
    assert_eq!(refused("deletePet", json!({})), "missing required arguments `petId`, `X-Confirm`");
    assert_eq!(refused("createPet", json!({})), "missing required argument `body`");
    assert_eq!(refused("createPet", json!({ "body": null })), "missing required argument `body`");
}

#[test]
fn unknown_arguments_are_refused() {
    assert_eq!(
        refused("listPets", json!({ "limt": 5 })),
        "unknown argument `limt` (this tool takes: limit, tags, status, X-Request-Id)"
    );
    assert_eq!(
        refused("createPet", json!({ "body": {}, "name": "Rex" })),
        "unknown argument `name` (this tool takes: body)"
    );
    assert_eq!(
        refused("updatePet", json!({ "petId": "1", "session": "s", "Authorization": "x" })),
        "unknown arguments `Authorization`, `session` (this tool takes: petId, body)"
    );
}

#[test]
fn wrong_types_are_refused() {
    for (name, args, expected) in [
        ("listPets", json!({ "limit": "10" }), "argument `limit` must be an integer, not a string"),
        ("listPets", json!({ "limit": 1.5 }), "argument `limit` must be an integer, not 1.5"),
        ("listPets", json!({ "tags": "a" }), "argument `tags` must be an array, not a string"),
        ("listPets", json!({ "tags": ["a", 1] }), "argument `tags`: item 1 must be a string, not 1"),
        (
            "listPets",
            json!({ "status": "lost" }),
            "argument `status` must be one of \"available\", \"pending\", \"sold\", not \"lost\"",
        ),
        (
            "deletePet",
            json!({ "petId": "1", "X-Confirm": "yes" }),
            "argument `X-Confirm` must be a boolean, not a string",
        ),
        ("get_pets_petId", json!({ "petId": 42 }), "argument `petId` must be a string, not 42"),
        ("createPet", json!({ "body": "Rex" }), "argument `body` must be an object, not a string"),
        ("createPet", json!({ "body": [] }), "argument `body` must be an object, not an array"),
        ("search", json!({ "ids": [1, "2"] }), "argument `ids`: item 1 must be an integer, not a string"),
        ("search", json!({ "fuzzy": 1 }), "argument `fuzzy` must be a boolean, not 1"),
    ] {
        assert_eq!(refused(name, args.clone()), expected, "{name} {args}");
    }
    assert_eq!(refused("listPets", json!([1])), "the arguments must be a json object, not an array");
}

#[test]
fn header_injection_is_refused() {
    let message = refused("listPets", json!({ "X-Request-Id": "a\r\nX-Evil: 1" }));
    assert!(message.contains("control characters") && message.contains("x-request-id"), "{message}");
}

#[test]
fn path_styles_label_and_matrix() {
    let doc = json!({
        "openapi": "3.1.0",
        "paths": {
            "/m/{ids}": { "get": { "operationId": "matrix", "parameters": [
                { "name": "ids", "in": "path", "required": true, "style": "matrix", "explode": true,
                  "schema": { "type": "array", "items": { "type": "integer" } } } ] } },
            "/l/{point}": { "get": { "operationId": "label", "parameters": [
                { "name": "point", "in": "path", "required": true, "style": "label",
                  "schema": { "type": "object" } } ] } },
            "/s/{ids}": { "get": { "operationId": "simple", "parameters": [
                { "name": "ids", "in": "path", "required": true,
                  "schema": { "type": "array", "items": { "type": "string" } } } ] } },
            "/p": { "get": { "operationId": "pipes", "parameters": [
                { "name": "ids", "in": "query", "style": "pipeDelimited", "explode": false,
                  "schema": { "type": "array" } } ] } }
        }
    });
    let api = Api::from_document(&doc).unwrap();
    let built = |name: &str, args: Value| op(&api, name).request(&args).unwrap().path_and_query;
    assert_eq!(built("matrix", json!({ "ids": [1, 2] })), "/m/;ids=1;ids=2");
    assert_eq!(built("label", json!({ "point": { "x": 1 } })), "/l/.x,1");
    assert_eq!(built("simple", json!({ "ids": ["a/b", "c,d"] })), "/s/a%2Fb,c%2Cd");
    assert_eq!(built("pipes", json!({ "ids": ["a", "b"] })), "/p?ids=a%7Cb");
}

#[test]
fn argument_names_are_sanitized_and_kept_apart() {
    let doc = json!({
        "openapi": "3.1.0",
        "paths": { "/items/{id}": { "post": {
            "operationId": "items.update",
            "parameters": [
                { "name": "id", "in": "path", "required": true, "schema": { "type": "string" } },
                { "name": "id", "in": "query", "schema": { "type": "string" } },
                { "name": "$top", "in": "query", "schema": { "type": "integer" } },
                { "name": "body", "in": "query", "schema": { "type": "string" } }
            ],
            "requestBody": { "content": { "application/merge-patch+json": { "schema": { "type": "object" } } } }
        } } }
    });
    let api = Api::from_document(&doc).unwrap();
    let update = op(&api, "items_update");
    let mut keys: Vec<&str> =
        update.input_schema["properties"].as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["_top", "body", "path_id", "query_body", "query_id"]);
    let built =
        update.request(&json!({ "path_id": "1", "query_id": "2", "_top": 5, "query_body": "b", "body": {} })).unwrap();
    assert_eq!(built.path_and_query, "/items/1?id=2&%24top=5&body=b");
    assert_eq!(built.headers, [("content-type".to_owned(), "application/merge-patch+json".to_owned())]);
    assert_eq!(built.body.as_deref(), Some(&b"{}"[..]));
}

// ---------------------------------------------------------------------------
// Results

#[test]
fn a_json_object_answer_is_text_and_structured_content() {
    let result = tool_result(200, Some("application/json; charset=utf-8"), b"{ \"id\": 7,\n \"name\": \"Rex\" }");
    assert_eq!(
        result,
        json!({
            "content": [{ "type": "text", "text": "{\"id\":7,\"name\":\"Rex\"}" }],
            "structuredContent": { "id": 7, "name": "Rex" },
            "isError": false
        })
    );
    let list = tool_result(200, Some("application/problem+json"), b"[1, 2]");
    assert_eq!(list, json!({ "content": [{ "type": "text", "text": "[1,2]" }], "isError": false }));
    let sniffed = tool_result(201, None, b"{\"ok\":true}");
    assert_eq!(sniffed["structuredContent"], json!({ "ok": true }));
}

#[test]
fn a_text_answer_is_text() {
    let result = tool_result(200, Some("text/plain"), b"{not json} hello");
    assert_eq!(result, json!({ "content": [{ "type": "text", "text": "{not json} hello" }], "isError": false }));
    let broken = tool_result(200, Some("application/json"), b"{\"cut");
    assert_eq!(broken["content"][0]["text"], "{\"cut");
    assert!(broken.get("structuredContent").is_none());
    let empty = tool_result(204, None, b"");
    assert_eq!(empty["content"][0]["text"], "http status 204 (no content), empty body");
    assert_eq!(empty["isError"], false);
}

#[test]
fn binary_answers_are_images_or_described() {
    let image = tool_result(200, Some("image/png"), &[0x89, 0x50, 0x4e, 0x47]);
    assert_eq!(
        image,
        json!({ "content": [{ "type": "image", "data": "iVBORw==", "mimeType": "image/png" }], "isError": false })
    );
    let blob = tool_result(200, Some("application/octet-stream"), &[0xff, 0x00, 0xfe]);
    assert_eq!(
        blob["content"][0]["text"],
        "http status 200 (ok): 3 bytes of application/octet-stream (binary, not shown)"
    );
}

#[test]
fn an_error_status_is_an_error_with_a_bounded_body() {
    let result = tool_result(404, Some("application/json"), b"{\"error\":\"no such pet\"}");
    assert_eq!(
        result,
        json!({
            "content": [{ "type": "text", "text": "http status 404 (not found): {\"error\":\"no such pet\"}" }],
            "isError": true
        })
    );
    let long = "é".repeat(5000); // 10,000 bytes: the cut falls inside a character
    let result = tool_result(500, Some("text/plain"), long.as_bytes());
    let text = result["content"][0]["text"].as_str().unwrap();
    assert!(text.starts_with("http status 500 (internal server error): éé"), "{text}");
    assert!(text.ends_with("é [truncated: the body has 10000 bytes]"), "{text}");
    assert!(text.len() < 4200, "{}", text.len());
    assert!(!text.contains('\u{fffd}'));
    assert_eq!(tool_result(302, None, b"")["content"][0]["text"], "http status 302 (found)");
    assert_eq!(tool_result(599, None, b"x")["isError"], true);
}

// ---------------------------------------------------------------------------
// Documents refused, and documents that must not hang

fn with_paths(paths: Value) -> Value {
    json!({ "openapi": "3.0.0", "paths": paths })
}

#[test]
fn duplicate_tool_names_name_both_operations() {
    let doc = with_paths(json!({
        "/pets": { "get": { "operationId": "pets" } },
        "/animals": { "get": { "operationId": "pets" } }
    }));
    match Api::from_document(&doc) {
        Err(OpenApiError::DuplicateName { name, first, second }) => {
            assert_eq!(name, "pets");
            let mut both = [first, second];
            both.sort();
            assert_eq!(both, ["/paths/~1animals/get", "/paths/~1pets/get"]);
        }
        other => panic!("{other:?}"),
    }
    // A derived name and an operationId, and two ids equal once sanitized.
    let doc = with_paths(json!({ "/pets": { "get": {}, "post": { "operationId": "get_pets" } } }));
    let error = Api::from_document(&doc).unwrap_err().to_string();
    assert_eq!(error, "the operations at `/paths/~1pets/get` and `/paths/~1pets/post` are both named `get_pets`");
    let doc = with_paths(
        json!({ "/a": { "get": { "operationId": "list.pets" } }, "/b": { "get": { "operationId": "list pets" } } }),
    );
    assert!(matches!(Api::from_document(&doc), Err(OpenApiError::DuplicateName { name, .. }) if name == "list_pets"));
}

#[test]
fn cyclic_references_terminate() {
    let doc = json!({
        "openapi": "3.1.0",
        "paths": { "/tree": { "post": {
            "operationId": "plant",
            "parameters": [{ "name": "mode", "in": "query", "schema": { "$ref": "#/components/schemas/A" } }],
            "requestBody": { "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Node" } } } }
        } } },
        "components": { "schemas": {
            "Node": { "type": "object", "properties": {
                "value": { "type": "string" },
                "children": { "type": "array", "items": { "$ref": "#/components/schemas/Node" } },
                "next": { "$ref": "#/components/schemas/Node", "description": "the next node" }
            } },
            "A": { "$ref": "#/components/schemas/B" },
            "B": { "$ref": "#/components/schemas/A" }
        } }
    });
    let api = Api::from_document(&doc).unwrap();
    let schema = &op(&api, "plant").input_schema;
    assert_eq!(schema["properties"]["mode"], json!({}));
    let body = &schema["properties"]["body"];
    assert_eq!(body["properties"]["children"], json!({ "type": "array", "items": {} }));
    assert_eq!(body["properties"]["next"], json!({ "description": "the next node" }));

    // A parameter that refers to itself is an error, not a loop.
    let doc = json!({
        "openapi": "3.0.0",
        "paths": { "/x": { "get": { "parameters": [{ "$ref": "#/components/parameters/P" }] } } },
        "components": { "parameters": { "P": { "$ref": "#/components/parameters/P" } } }
    });
    let (pointer, message) = document_error(&doc);
    assert_eq!(pointer, "/components/parameters/P");
    assert!(message.contains("reference cycle"), "{message}");
}

#[test]
fn exponential_and_deep_schemas_are_refused() {
    // Ten levels of ten references each: 10^10 nodes if inlined blindly.
    let mut schemas = serde_json::Map::new();
    for level in 0..10 {
        let next = json!({ "$ref": format!("#/components/schemas/L{}", level + 1) });
        let properties: serde_json::Map<String, Value> = (0..10).map(|i| (format!("p{i}"), next.clone())).collect();
        schemas.insert(format!("L{level}"), json!({ "type": "object", "properties": properties }));
    }
    schemas.insert("L10".to_owned(), json!({ "type": "string" }));
    let doc = json!({
        "openapi": "3.0.0",
        "paths": { "/bomb": { "post": { "requestBody": { "content": { "application/json": {
            "schema": { "$ref": "#/components/schemas/L0" } } } } } } },
        "components": { "schemas": schemas }
    });
    let (pointer, message) = document_error(&doc);
    assert_eq!(pointer, "/paths/~1bomb/post");
    assert!(message.contains("more than 50000 values"), "{message}");

    // A chain of 80 distinct references.
    let mut schemas = serde_json::Map::new();
    for level in 0..80 {
        schemas.insert(format!("S{level}"), json!({ "$ref": format!("#/components/schemas/S{}", level + 1) }));
    }
    schemas.insert("S80".to_owned(), json!({ "type": "string" }));
    let doc = json!({
        "openapi": "3.0.0",
        "paths": { "/deep": { "get": { "parameters": [
            { "name": "q", "in": "query", "schema": { "$ref": "#/components/schemas/S0" } } ] } } },
        "components": { "schemas": schemas }
    });
    let (_, message) = document_error(&doc);
    assert!(message.contains("more than 64 levels"), "{message}");
}

#[test]
fn errors_name_the_pointer_of_the_bad_field() {
    let cases = [
        (
            with_paths(json!({ "/pets": { "get": { "parameters": [{ "name": "pet", "in": "body" }] } } })),
            "/paths/~1pets/get/parameters/0/in",
            "unknown parameter location `body`",
        ),
        (
            with_paths(json!({ "/pets": { "get": { "parameters": [
                { "name": "q", "in": "query", "schema": { "$ref": "other.yaml#/Pet" } } ] } } })),
            "/paths/~1pets/get/parameters/0/schema/$ref",
            "outside the document",
        ),
        (
            with_paths(
                json!({ "/pets": { "post": { "requestBody": { "$ref": "#/components/requestBodies/Nope" } } } }),
            ),
            "/paths/~1pets/post/requestBody/$ref",
            "does not resolve",
        ),
        (with_paths(json!({ "/pets/{petId}": { "get": {} } })), "/paths/~1pets~1{petId}", "no path parameter `petId`"),
        (
            with_paths(json!({ "/pets": { "get": { "parameters": [
                { "name": "petId", "in": "path", "required": true } ] } } })),
            "/paths/~1pets",
            "is not in the path",
        ),
        (
            with_paths(json!({ "/pets": { "get": { "operationId": 7 } } })),
            "/paths/~1pets/get/operationId",
            "non-empty string",
        ),
        (
            with_paths(json!({ "/pets": { "get": { "parameters": [
                { "name": "q", "in": "query", "style": "matrix" } ] } } })),
            "/paths/~1pets/get/parameters/0/style",
            "style `matrix` is not supported for a query parameter",
        ),
        (
            with_paths(json!({ "/pets": { "get": { "parameters": [
                { "name": "q", "in": "query" }, { "name": "q", "in": "query" } ] } } })),
            "/paths/~1pets/get/parameters/1",
            "declared twice",
        ),
        (
            with_paths(json!({ "/pets": { "get": { "parameters": [
                { "name": "q", "in": "query", "schema": { "type": "object", "properties": { "a": 3 } } } ] } } })),
            "/paths/~1pets/get/parameters/0/schema/properties/a",
            "a schema must be an object or a boolean",
        ),
        (with_paths(json!({ "/a/../b": { "get": {} } })), "/paths/~1a~1..~1b", "`..` segment"),
        (with_paths(json!({ "pets": { "get": {} } })), "/paths/pets", "must start with `/`"),
        (json!({ "swagger": "2.0", "paths": {} }), "/swagger", "swagger 2.0"),
        (json!({ "openapi": "4.0.0" }), "/openapi", "not supported"),
    ];
    for (doc, pointer, fragment) in cases {
        let (got, message) = document_error(&doc);
        assert_eq!(got, pointer, "{message}");
        assert!(message.contains(fragment), "`{message}` should say `{fragment}`");
        assert!(doc.pointer(&got).is_some(), "`{got}` names a field of the document");
    }
}

#[test]
fn a_yaml_document_works_once_parsed() {
    let yaml = r#"
openapi: 3.1.0
info: { title: tiny, version: "1" }
paths:
  /users/{id}:
    get:
      operationId: getUser
      summary: One user
      parameters:
        - { name: id, in: path, required: true, schema: { type: integer } }
      responses:
        '200': { description: the user }
"#;
    let doc: Value = serde_yaml_ng::from_str(yaml).unwrap();
    let api = Api::from_document(&doc).unwrap();
    let user = op(&api, "getUser");
    assert_eq!(user.request(&json!({ "id": 12 })).unwrap().path_and_query, "/users/12");
    assert_eq!(user.tool()["description"], "One user");
}

#[test]
fn a_document_without_paths_has_no_tools() {
    let api = Api::from_document(&json!({ "openapi": "3.1.0", "webhooks": {} })).unwrap();
    assert!(api.operations.is_empty() && api.skipped.is_empty());
    assert!(Api::from_document(&json!([])).is_err());
}
