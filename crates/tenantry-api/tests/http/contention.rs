//! Writes that collide with a concurrent transaction (deadlock, serialization failure): run again a few times by the server, then answered 503 with `Retry-After`, never 500. The collisions are forced by a trigger the test installs as superuser.

use serde_json::json;

use crate::helpers::{assert_problem_shape, TestApp};

/// Installs, as superuser, a trigger on resources that counts every insert of
/// a name starting with `collides` and fails it as a concurrent transaction
/// would: `always-collides` every time (serialization failure), `collides-twice`
/// on its first two runs (deadlock).
async fn install_collisions(app: &TestApp) {
    let su = app.db.superuser_client().await;
    su.batch_execute(
        "CREATE SEQUENCE public.collision_runs;
         CREATE FUNCTION public.collide() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
         SET search_path = pg_catalog, pg_temp AS $$
         DECLARE run bigint;
         BEGIN
             IF NEW.name LIKE 'collides%' OR NEW.name = 'always-collides' THEN
                 run := nextval('public.collision_runs');
                 IF NEW.name = 'always-collides' THEN
                     RAISE EXCEPTION 'could not serialize access due to concurrent update' USING ERRCODE = '40001';
                 END IF;
                 IF NEW.name = 'collides-twice' AND run <= 2 THEN
                     RAISE EXCEPTION 'deadlock detected' USING ERRCODE = '40P01';
                 END IF;
             END IF;
             RETURN NEW;
         END $$;
         CREATE TRIGGER collide BEFORE INSERT ON tenantry.resources
             FOR EACH ROW EXECUTE FUNCTION public.collide();",
    )
    .await
    .expect("installing the collision trigger");
}

async fn runs(app: &TestApp) -> i64 {
    app.count("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM public.collision_runs")
        .await
}

#[tokio::test]
async fn a_write_that_collides_twice_is_run_again_and_answers_201_with_one_row() {
    let app = TestApp::spawn().await;
    let t = app.tenant("lucky").await;
    install_collisions(&app).await;

    app.create_resource(&t.key, "collides-twice").await;
    assert_eq!(
        runs(&app).await,
        3,
        "two collisions, then the run that committed"
    );
    assert_eq!(app.resource_names(&t.key, "").await, vec!["collides-twice"]);
}

#[tokio::test]
async fn a_write_that_keeps_colliding_answers_503_with_retry_after_and_writes_nothing() {
    let app = TestApp::spawn().await;
    let t = app.tenant("unlucky").await;
    install_collisions(&app).await;

    let response = app
        .client
        .post(app.url("/v1/resources"))
        .bearer_auth(&t.key)
        .json(&json!({ "name": "always-collides" }))
        .send()
        .await
        .unwrap();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .map(|v| v.to_str().unwrap().to_owned());
    let r = app.send_raw_response(response).await;
    r.problem(503, "service_unavailable");
    assert_problem_shape(&r);
    assert_eq!(retry_after.as_deref(), Some("1"));
    assert!(!r.text.contains("serialize"), "{}", r.text);
    assert_eq!(runs(&app).await, 4, "run 4 times in all, then answered");
    assert_eq!(app.resource_names(&t.key, "").await, Vec::<String>::new());
}
