//! The client's pieces on their own: addresses, STS answers and refusals, error bodies, which
//! operations are sent again. (Against a real engine: the operator's `remote` tests.)

use super::*;

#[test]
fn endpoints_are_a_scheme_host_and_port() {
    let e = Endpoint::parse("http://10.0.0.7:4599", false).unwrap();
    assert_eq!(e.host, "10.0.0.7:4599");
    assert_eq!(e.uri.to_string(), "http://10.0.0.7:4599/");
    let e = Endpoint::parse("http://[fd00::7]:4599/", false).unwrap();
    assert_eq!(e.host, "[fd00::7]:4599");
    let e = Endpoint::parse("https://kubekms-engine.kubekms.svc:4599", true).unwrap();
    assert_eq!(
        e.uri.to_string(),
        "https://kubekms-engine.kubekms.svc:4599/"
    );
    let in_clear = Endpoint::parse("http://x:1", true).err().unwrap();
    assert!(in_clear.to_string().contains("use https://"), "{in_clear}");
    let no_bundle = Endpoint::parse("https://x:1", false).err().unwrap();
    assert!(no_bundle.to_string().contains("CA bundle"), "{no_bundle}");
    assert_eq!(
        cluster_ip_url("10.0.0.53", 4599, true).as_deref(),
        Some("https://10.0.0.53:4599")
    );
    assert_eq!(cluster_ip_url("None", 4599, true), None);
    for bad in [
        "ftp://x:1",
        "10.0.0.7:4599",
        "http://x:1/path",
        "http://x:1/?q",
        "",
    ] {
        assert!(Endpoint::parse(bad, false).is_err(), "{bad}");
    }
}

#[test]
fn a_fixed_endpoint_is_not_replaced_by_the_services() {
    let settings = |endpoint: Option<&str>, endpoint_fixed| ClientSettings {
        endpoint: endpoint.map(str::to_owned),
        ca_bundle: None,
        server_name: None,
        endpoint_fixed,
        token_file: "/t".into(),
        region: "eu-west-1".into(),
        role_arn: "arn:aws:iam::111122223333:role/kubekms".into(),
        session_name: "test".into(),
    };
    let remote = KmsClient::new(settings(Some("http://127.0.0.1:1"), true)).unwrap();
    remote.set_endpoint("http://10.0.0.7:4599").unwrap();
    assert_eq!(remote.endpoint().as_deref(), Some("http://127.0.0.1:1/"));
    let remote = KmsClient::new(settings(None, false)).unwrap();
    remote.set_endpoint("http://10.0.0.7:4599").unwrap();
    assert_eq!(remote.endpoint().as_deref(), Some("http://10.0.0.7:4599/"));
}

const ASSUMED: &str = "<AssumeRoleWithWebIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\">\
    <AssumeRoleWithWebIdentityResult>\
    <SubjectFromWebIdentityToken>system:serviceaccount:kubekms-system:kubekms-operator</SubjectFromWebIdentityToken>\
    <Credentials><SessionToken>KKS1a&amp;b</SessionToken><SecretAccessKey>s&lt;cret</SecretAccessKey>\
    <Expiration>2030-01-01T01:00:00Z</Expiration><AccessKeyId>ASIAX</AccessKeyId></Credentials>\
    </AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";

#[test]
fn sessions_are_read_from_the_sts_answer_and_renewed_early() {
    // 2030-01-01T00:00:00Z, an hour before the expiry.
    let issued: Millis = 1_893_456_000_000;
    let s = parse_assumed(ASSUMED, issued).unwrap();
    assert_eq!(s.access_key_id, "ASIAX");
    assert_eq!(&*s.secret_access_key, "s<cret");
    assert_eq!(&*s.session_token, "KKS1a&b");
    assert_eq!(s.expiration, issued + 3_600_000);
    assert_eq!(s.refresh_at, s.expiration - 5 * 60_000);
    // A session of four minutes is renewed halfway.
    let short = parse_assumed(ASSUMED, s.expiration - 240_000).unwrap();
    assert_eq!(short.refresh_at, s.expiration - 120_000);
    assert!(parse_assumed("<x/>", issued).is_err());
    let bad_time = ASSUMED.replace("2030-01-01T01:00:00Z", "tomorrow");
    assert!(parse_assumed(&bad_time, issued)
        .err()
        .unwrap()
        .contains("tomorrow"));
}

#[test]
fn sts_refusals_are_read_from_the_error_document() {
    let xml = |code: &str| {
        format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code>\
             <Message>a &quot;b&quot;</Message></Error></ErrorResponse>"
        )
    };
    let refusal = sts_error(&xml("InvalidIdentityToken")).unwrap();
    assert_eq!(refusal.aws_type, "InvalidIdentityToken");
    assert_eq!(refusal.message, "a \"b\"");
    // Not an STS error at all: not the engine's refusal.
    assert!(sts_error("<html>404 page not found</html>").is_none());
    assert!(sts_error("").is_none());
}

#[test]
fn error_bodies_decode_into_variants_and_others_are_unreachable() {
    let answer = |status: StatusCode, body: &str| Answer {
        status,
        body: Bytes::from(body.to_owned()),
    };
    let refused = answer(
        StatusCode::BAD_REQUEST,
        r#"{"__type":"NotFoundException","message":"Key 'x' does not exist"}"#,
    )
    .refusal();
    assert!(
        matches!(&refused, CallError::Refused(r) if r.aws_type == "NotFoundException" && r.message == "Key 'x' does not exist"),
        "{refused}"
    );
    let capital = answer(
        StatusCode::BAD_REQUEST,
        r#"{"__type":"com.amazonaws.kms#DisabledException","Message":"off"}"#,
    )
    .refusal();
    assert!(
        matches!(&capital, CallError::Refused(r) if r.aws_type == "com.amazonaws.kms#DisabledException" && r.message == "off"),
        "{capital}"
    );
    let proxy = answer(StatusCode::BAD_GATEWAY, "<html>bad gateway</html>").refusal();
    assert!(matches!(
        proxy,
        CallError::Unreachable(TransportError::Undecodable { status: 502, .. })
    ));
    let garbled: Result<crate::ops::KeyMetadataResponse, _> = answer(StatusCode::OK, "{}").decode();
    assert!(matches!(
        garbled,
        Err(CallError::Unreachable(TransportError::Undecodable { .. }))
    ));
}

#[test]
fn only_operations_that_may_run_twice_are_retried_after_they_may_have_arrived() {
    for op in [
        Operation::DescribeKey,
        Operation::ListKeys,
        Operation::PutKeyPolicy,
        Operation::EnableKey,
        Operation::TagResource,
    ] {
        assert!(idempotent(op), "{op}");
    }
    for op in [
        Operation::CreateKey,
        Operation::CreateAlias,
        Operation::DeleteAlias,
        Operation::RotateKeyOnDemand,
        Operation::ScheduleKeyDeletion,
        Operation::CancelKeyDeletion,
        Operation::ImportKeyMaterial,
    ] {
        assert!(!idempotent(op), "{op}");
    }
}

#[test]
fn xml_text_unescapes() {
    assert_eq!(
        xml_text("<a>x&amp;y&lt;&gt;&apos;&quot;&z</a>", "a").as_deref(),
        Some("x&y<>'\"&z")
    );
    assert_eq!(xml_text("<a>x</a>", "b"), None);
    assert_eq!(xml_text("<a>x", "a"), None);
}

#[test]
fn a_refusal_is_known_by_its_bare_name() {
    let refusal = |t: &str| Refusal {
        aws_type: t.into(),
        message: String::new(),
    };
    assert!(refusal("ExpiredTokenException").is("ExpiredTokenException"));
    assert!(refusal("com.amazonaws.kms#ExpiredTokenException").is("ExpiredTokenException"));
    assert!(refusal("ExpiredTokenException:http://internal").is("ExpiredTokenException"));
    assert!(!refusal("ExpiredToken").is("ExpiredTokenException"));
}
