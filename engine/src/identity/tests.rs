//! The web-identity exchange against a fake cluster: which tokens it accepts, what it issues,
//! and how long a review is trusted.

use std::sync::atomic::Ordering;

use super::testing::{jwt, FakeTokenReviewer as FakeCluster};
use super::*;
use crate::clock::SystemClock;
use crate::crypto::RootKey;

const ACCOUNT: &str = "111122223333";
const ROLE: &str = "arn:aws:iam::111122223333:role/kubekms";
const OPERATOR_SA: &str = "system:serviceaccount:kubekms-system:kubekms-operator";

struct Setup {
    cluster: Arc<FakeCluster>,
    clock: Arc<SystemClock>,
    exchange: WebIdentity,
}

fn setup() -> Setup {
    let cluster = Arc::new(FakeCluster::default());
    let clock = SystemClock::new();
    let sessions = Arc::new(Sessions::new(&RootKey::from_bytes(&[3u8; 32]).unwrap()).unwrap());
    let exchange = WebIdentity::new(
        cluster.clone(),
        sessions,
        IdentityMap {
            admin_groups: vec!["system:masters".into()],
            operator_service_account: Some(OPERATOR_SA.into()),
            webhook_service_account: None,
        },
        ACCOUNT,
        clock.clone(),
    );
    Setup {
        cluster,
        clock,
        exchange,
    }
}

fn orders() -> ReviewedToken {
    ReviewedToken {
        username: "system:serviceaccount:shop:orders".into(),
        groups: vec![
            "system:serviceaccounts".into(),
            "system:serviceaccounts:shop".into(),
        ],
    }
}

fn request(token: &str) -> AssumeRequest<'_> {
    AssumeRequest {
        role_arn: ROLE,
        role_session_name: "app-session",
        web_identity_token: token,
        duration_seconds: None,
    }
}

fn now_secs(clock: &SystemClock) -> u64 {
    (clock.now_millis() / 1000) as u64
}

#[tokio::test]
async fn a_reviewed_token_becomes_a_session_of_its_identity() {
    let s = setup();
    let token = jwt(now_secs(&s.clock) + 7200, 1);
    s.cluster.known.lock().insert(token.clone(), orders());
    let assumed = s.exchange.assume(request(&token)).await.unwrap();
    assert_eq!(assumed.subject, "system:serviceaccount:shop:orders");
    assert_eq!(
        assumed.principal.arn(),
        "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:orders"
    );
    assert_eq!(
        assumed.principal.groups(),
        [
            "arn:aws:iam::111122223333:group/k8s/system:serviceaccounts",
            "arn:aws:iam::111122223333:group/k8s/system:serviceaccounts:shop"
        ]
    );
    assert_eq!(assumed.principal.role(), AccountRole::Member);
    assert_eq!(
        assumed.assumed_role_arn,
        "arn:aws:sts::111122223333:assumed-role/kubekms/app-session"
    );
    // Default one hour, within the token's two.
    let now = s.clock.now_millis();
    let expiry = assumed.credentials.expiration;
    assert!(
        expiry > now + 3_590_000 && expiry <= now + 3_600_000,
        "{expiry} vs {now}"
    );
    let session = s
        .exchange
        .sessions()
        .open(
            &assumed.credentials.access_key_id,
            &assumed.credentials.session_token,
            now,
        )
        .unwrap();
    assert_eq!(
        s.exchange.principal_of(&session.identity),
        assumed.principal
    );
}

#[tokio::test]
async fn sessions_end_no_later_than_the_token() {
    let s = setup();
    let exp = now_secs(&s.clock) + 1000;
    let token = jwt(exp, 2);
    s.cluster.known.lock().insert(token.clone(), orders());
    let mut req = request(&token);
    req.duration_seconds = Some(43_200);
    let assumed = s.exchange.assume(req).await.unwrap();
    assert_eq!(assumed.credentials.expiration, exp as i64 * 1000);
}

#[tokio::test]
async fn refused_tokens_and_requests() {
    let s = setup();
    let now = now_secs(&s.clock);
    let unknown = jwt(now + 3600, 3);
    assert!(matches!(
        s.exchange.assume(request(&unknown)).await,
        Err(KmsError::InvalidIdentityToken(_))
    ));
    let expired = jwt(now - 1, 4);
    s.cluster.known.lock().insert(expired.clone(), orders());
    assert!(matches!(
        s.exchange.assume(request(&expired)).await,
        Err(KmsError::ExpiredToken(_))
    ));
    assert!(matches!(
        s.exchange.assume(request("not-a-jwt")).await,
        Err(KmsError::InvalidIdentityToken(_))
    ));
    let good = jwt(now + 3600, 5);
    s.cluster.known.lock().insert(good.clone(), orders());
    let mut other_account = request(&good);
    other_account.role_arn = "arn:aws:iam::444455556666:role/kubekms";
    assert!(matches!(
        s.exchange.assume(other_account).await,
        Err(KmsError::AccessDenied(_))
    ));
    for duration in [899, 43_201] {
        let mut req = request(&good);
        req.duration_seconds = Some(duration);
        assert!(matches!(
            s.exchange.assume(req).await,
            Err(KmsError::Validation(_))
        ));
    }
    let mut bad_name = request(&good);
    bad_name.role_session_name = "a b";
    assert!(matches!(
        s.exchange.assume(bad_name).await,
        Err(KmsError::Validation(_))
    ));
    let mut not_a_role = request(&good);
    not_a_role.role_arn = "arn:aws:iam::111122223333:user/kubekms";
    assert!(matches!(
        s.exchange.assume(not_a_role).await,
        Err(KmsError::Validation(_))
    ));
}

#[tokio::test]
async fn reviews_are_cached_for_a_bounded_time() {
    let s = setup();
    let token = jwt(now_secs(&s.clock) + 7200, 6);
    s.cluster.known.lock().insert(token.clone(), orders());
    s.exchange.assume(request(&token)).await.unwrap();
    s.exchange.assume(request(&token)).await.unwrap();
    assert_eq!(s.cluster.reviews.load(Ordering::SeqCst), 1);
    // The ServiceAccount is deleted: its token still works from the cache, until the cache
    // time is over.
    s.cluster.known.lock().clear();
    s.clock.advance(REVIEW_CACHE_MILLIS - 1000);
    s.exchange.assume(request(&token)).await.unwrap();
    s.clock.advance(2000);
    assert!(matches!(
        s.exchange.assume(request(&token)).await,
        Err(KmsError::InvalidIdentityToken(_))
    ));
    assert_eq!(s.cluster.reviews.load(Ordering::SeqCst), 2);
}

#[test]
fn admin_groups_make_administrators() {
    let map = IdentityMap {
        admin_groups: vec!["system:masters".into()],
        ..IdentityMap::default()
    };
    let admin = map.principal(ACCOUNT, "alice", &["system:masters".into()]);
    assert_eq!(admin.role(), AccountRole::Administrator);
    assert_eq!(admin.arn(), "arn:aws:iam::111122223333:user/k8s/alice");
    assert_eq!(
        map.principal(ACCOUNT, "bob", &[]).role(),
        AccountRole::Member
    );
}

#[test]
fn the_operator_service_account_is_the_operator_principal_in_sessions_only() {
    let map = IdentityMap {
        admin_groups: vec!["system:masters".into()],
        operator_service_account: Some(OPERATOR_SA.into()),
        webhook_service_account: Some(
            "system:serviceaccount:kubekms-system:kubekms-webhook".into(),
        ),
    };
    let sa_groups = || {
        vec![
            "system:serviceaccounts".to_owned(),
            "system:serviceaccounts:kubekms-system".to_owned(),
        ]
    };
    struct Case {
        what: &'static str,
        map: IdentityMap,
        username: &'static str,
        groups: Vec<String>,
        arn: &'static str,
        role: AccountRole,
        groups_kept: bool,
    }
    let cases = [
        Case {
            what: "the operator's ServiceAccount",
            map: map.clone(),
            username: OPERATOR_SA,
            groups: sa_groups(),
            arn: "arn:aws:iam::111122223333:role/kubekms-operator",
            role: AccountRole::KeyCreator,
            groups_kept: false,
        },
        Case {
            what: "the operator's ServiceAccount, even in an admin group",
            map: map.clone(),
            username: OPERATOR_SA,
            groups: vec!["system:masters".into()],
            arn: "arn:aws:iam::111122223333:role/kubekms-operator",
            role: AccountRole::KeyCreator,
            groups_kept: false,
        },
        Case {
            what: "a namesake in another namespace",
            map: map.clone(),
            username: "system:serviceaccount:shop:kubekms-operator",
            groups: sa_groups(),
            arn: "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:shop:kubekms-operator",
            role: AccountRole::Member,
            groups_kept: true,
        },
        Case {
            what: "another ServiceAccount of the operator's namespace",
            map: map.clone(),
            username: "system:serviceaccount:kubekms-system:kubekms-engine",
            groups: sa_groups(),
            arn: "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:kubekms-system:kubekms-engine",
            role: AccountRole::Member,
            groups_kept: true,
        },
        Case {
            what: "the webhook's ServiceAccount",
            map: map.clone(),
            username: "system:serviceaccount:kubekms-system:kubekms-webhook",
            groups: vec!["system:masters".into()],
            arn: "arn:aws:iam::111122223333:role/kubekms-webhook",
            role: AccountRole::Member,
            groups_kept: false,
        },
        Case {
            what: "an administrator",
            map: map.clone(),
            username: "alice",
            groups: vec!["system:masters".into()],
            arn: "arn:aws:iam::111122223333:user/k8s/alice",
            role: AccountRole::Administrator,
            groups_kept: true,
        },
        Case {
            what: "no operator ServiceAccount configured",
            map: IdentityMap::default(),
            username: OPERATOR_SA,
            groups: sa_groups(),
            arn: "arn:aws:iam::111122223333:role/k8s/system:serviceaccount:kubekms-system:kubekms-operator",
            role: AccountRole::Member,
            groups_kept: true,
        },
    ];
    for c in cases {
        let p = c.map.session_principal(ACCOUNT, c.username, &c.groups);
        assert_eq!(p.arn(), c.arn, "{}", c.what);
        assert_eq!(p.role(), c.role, "{}", c.what);
        assert_eq!(
            p.groups().len(),
            if c.groups_kept { c.groups.len() } else { 0 },
            "{}",
            c.what
        );
        // Access keys never get the operator's principal.
        let plain = c.map.principal(ACCOUNT, c.username, &c.groups);
        assert_ne!(plain.role(), AccountRole::KeyCreator, "{}", c.what);
    }
    assert_eq!(
        IdentityMap::operator_principal(ACCOUNT),
        Principal::new(operator_role_arn(ACCOUNT)).with_role(AccountRole::KeyCreator)
    );
}

#[tokio::test]
async fn the_operator_exchanges_its_token_for_the_operator_principal() {
    let s = setup();
    let token = jwt(now_secs(&s.clock) + 3600, 7);
    s.cluster.known.lock().insert(
        token.clone(),
        ReviewedToken {
            username: OPERATOR_SA.into(),
            groups: vec!["system:serviceaccounts".into()],
        },
    );
    let assumed = s.exchange.assume(request(&token)).await.unwrap();
    assert_eq!(assumed.subject, OPERATOR_SA);
    assert_eq!(assumed.principal, IdentityMap::operator_principal(ACCOUNT));
    // And every request signed with the session's credentials acts as it.
    let session = s
        .exchange
        .sessions()
        .open(
            &assumed.credentials.access_key_id,
            &assumed.credentials.session_token,
            s.clock.now_millis(),
        )
        .unwrap();
    assert_eq!(
        s.exchange.principal_of(&session.identity),
        IdentityMap::operator_principal(ACCOUNT)
    );
}
