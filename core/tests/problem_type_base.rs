//! The application's problem type base, set once for the process (a test binary of its own, so
//! no other test sees the base it sets).

use axum_core::response::IntoResponse;
use stockroom_core::problem::{set_type_base, type_base, TypeBaseError, DEFAULT_TYPE_BASE};
use stockroom_core::{Error, Rule};

async fn type_of(error: Error) -> String {
    let response = error.into_response();
    let body = axum_body_bytes(response).await;
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    json["type"].as_str().unwrap().to_owned()
}

async fn axum_body_bytes(response: axum_core::response::Response) -> Vec<u8> {
    use http_body_util::BodyExt;
    response
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes()
        .to_vec()
}

#[tokio::test]
async fn the_base_the_application_sets_is_every_errors_type_and_cannot_change() {
    assert_eq!(type_base(), DEFAULT_TYPE_BASE);
    assert_eq!(
        type_of(Error::validation("name", Rule::Empty)).await,
        "urn:stockroom:problem:validation"
    );

    // A base that is not an absolute URI is refused and sets nothing.
    assert_eq!(
        set_type_base("problems/"),
        Err(TypeBaseError::NotAnAbsoluteUri("problems/".into()))
    );
    assert_eq!(type_base(), DEFAULT_TYPE_BASE);

    set_type_base("https://api.example.com/problems/").unwrap();
    assert_eq!(
        type_of(Error::validation("name", Rule::Empty)).await,
        "https://api.example.com/problems/validation"
    );
    assert_eq!(
        type_of(Error::transient("busy")).await,
        "https://api.example.com/problems/transient"
    );

    // One base per process: another is refused, the first stays.
    assert_eq!(
        set_type_base("urn:other:"),
        Err(TypeBaseError::AlreadySet(
            "https://api.example.com/problems/".into()
        ))
    );
    assert_eq!(type_base(), "https://api.example.com/problems/");
}
