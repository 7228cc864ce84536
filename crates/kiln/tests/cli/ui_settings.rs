//! The settings and admin pages in a real browser (the harness of
//! `ui.rs`): users and tokens made by an admin, a job's secrets and
//! members changed by its maintainer, what a viewer may not do, forms
//! without their token refused, and the audit log that saw it all.
//! Screenshots land in `$CARGO_TARGET_TMPDIR/ui-screenshots/<test>/`.

use fantoccini::Locator;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::server::{ADMIN_PASSWORD, Server};
use crate::ui::{Browser, PASSWORD, job, member};

const PIPELINE: &str = "version: 1\ntasks:\n  build:\n    steps:\n      - run: echo built\n";

/// A secret value no page may ever hold.
const SECRET_VALUE: &str = "hunter2-do-not-show-me";

async fn fill(browser: &Browser, css: &str, text: &str) {
    let field = browser
        .client
        .find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("no `{css}` to fill: {e}"));
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

/// Posts a form the page does not offer, as a hand-made one would be:
/// with the session's own form token (read from the sign-out form) when
/// `with_token`, else without one.
async fn post_form(browser: &Browser, action: &str, fields: &[(&str, &str)], with_token: bool) {
    let fields: Vec<Value> = fields.iter().map(|(k, v)| json!([k, v])).collect();
    browser
        .client
        .execute(
            "const [action, fields, withToken] = arguments;
             const form = document.createElement('form');
             form.method = 'post';
             form.action = action;
             const add = (name, value) => {
               const input = document.createElement('input');
               input.type = 'hidden'; input.name = name; input.value = value;
               form.append(input);
             };
             for (const [name, value] of fields) add(name, value);
             if (withToken) add('csrf', document.querySelector('input[name=csrf]').value);
             document.body.append(form);
             form.submit();",
            vec![json!(action), Value::Array(fields), json!(with_token)],
        )
        .await
        .unwrap();
}

async fn source(browser: &Browser) -> String {
    browser.client.source().await.unwrap()
}

/// Asserts the page fits a 360 px wide phone without scrolling sideways
/// (wide tables scroll inside themselves), with a screenshot `name`.
async fn fits_a_phone(browser: &Browser, name: &str) {
    browser.client.set_window_size(360, 800).await.unwrap();
    let overflow = browser
        .client
        .execute(
            "return document.documentElement.scrollWidth > window.innerWidth",
            vec![],
        )
        .await
        .unwrap();
    browser.screenshot(name).await;
    browser.client.set_window_size(1280, 1000).await.unwrap();
    assert_eq!(
        overflow,
        Value::Bool(false),
        "{name} scrolls sideways at 360 px"
    );
}

async fn sign_out(browser: &Browser) {
    browser.click("header.top .who button").await;
    browser.arrive(|here| here == "/login").await;
}

#[tokio::test]
async fn an_admin_makes_a_user_and_a_token_that_works_until_revoked() {
    let server = Server::start(None);
    let browser = Browser::start(&server, "settings-admin").await;

    // Admin pages send an anonymous visitor to sign in, and back.
    browser.goto("/admin/users").await;
    browser
        .arrive(|here| here == "/login?next=%2Fadmin%2Fusers")
        .await;
    browser.sign_in("admin", ADMIN_PASSWORD).await;
    browser.arrive(|here| here == "/admin/users").await;
    assert_eq!(browser.title().await, "Users · Kiln");
    assert!(browser.has("header.top nav a[href='/admin/audit']").await);
    assert!(browser.has("header.top a[href='/settings/tokens']").await);

    // A user with a password, made in the form, signs in to the API's
    // `POST /login` with it.
    fill(&browser, "#user-name", "carol").await;
    fill(&browser, "#user-password", PASSWORD).await;
    browser.click("#create-user").await;
    browser
        .arrive(|here| here.starts_with("/admin/users?done=user-created"))
        .await;
    assert!(browser.text("p.done").await.contains("user is created"));
    assert_eq!(
        browser
            .text("#user-list tr[data-user='carol'] td:nth-child(2)")
            .await,
        "user"
    );
    let signed_in = server
        .request(Method::POST, "/login", None)
        .json(&json!({"username": "carol", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), StatusCode::OK, "carol signs in");
    browser.screenshot("users").await;
    fits_a_phone(&browser, "users-phone").await;

    // A name the API refuses: the form again, with why and the name typed,
    // never the password.
    fill(&browser, "#user-name", "no spaces").await;
    fill(&browser, "#user-password", "typed-password-1").await;
    browser.click("#create-user").await;
    browser.arrive(|here| here == "/admin/users").await;
    browser
        .client
        .wait()
        .for_element(Locator::Css(".form-error"))
        .await
        .unwrap();
    assert!(browser.text(".form-error").await.contains("name"));
    let html = source(&browser).await;
    assert!(html.contains("value=\"no spaces\""));
    assert!(
        !html.contains("typed-password-1"),
        "passwords are never sent back"
    );
    browser.screenshot("users-refused").await;

    // Disabling the last admin is refused, and the page says why.
    browser
        .click("#user-list tr[data-user='admin'] .row-actions form:first-child button")
        .await;
    browser.arrive(|here| here == "/admin/users/admin").await;
    browser
        .client
        .wait()
        .for_element(Locator::Css("main p.error"))
        .await
        .unwrap();
    assert!(browser.text("main p.error").await.contains("admin"));

    // A token: shown once, and it works against the API.
    browser.click("header.top a[href='/settings/tokens']").await;
    browser.arrive(|here| here == "/settings/tokens").await;
    assert_eq!(browser.title().await, "Your tokens · Kiln");
    fill(&browser, "#token-name", "laptop").await;
    browser
        .client
        .find(Locator::Css("#token-expires"))
        .await
        .unwrap()
        .select_by_value("7d")
        .await
        .unwrap();
    browser.click("#create-token").await;
    browser
        .client
        .wait()
        .for_element(Locator::Css("#new-token"))
        .await
        .unwrap();
    let token = browser.text("#new-token").await;
    assert!(token.starts_with("kiln_"), "{token}");
    assert!(browser.text("p.done").await.contains("shown this once"));
    browser.screenshot("token-created").await;
    let listed = server
        .request(Method::GET, "/api/v1/tokens", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK, "the new token works");
    let listed: Value = listed.json().await.unwrap();
    let laptop = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "laptop")
        .unwrap_or_else(|| panic!("the API lists the token: {listed}"));
    assert!(laptop["expires_at"].is_string(), "it expires: {laptop}");
    let id = laptop["id"].as_i64().unwrap();

    // The list shows it without its value; revoking it stops it at once.
    browser.goto("/settings/tokens").await;
    let row = format!("#token-list tr[data-token='{id}']");
    assert_eq!(
        browser.text(&format!("{row} td:nth-child(2)")).await,
        "active"
    );
    assert!(!source(&browser).await.contains(&token));
    browser.screenshot("tokens").await;
    browser.click(&format!("{row} button")).await;
    browser
        .arrive(|here| here.starts_with("/settings/tokens?done=token-revoked"))
        .await;
    assert_eq!(
        browser.text(&format!("{row} td:nth-child(2)")).await,
        "revoked"
    );
    assert!(!browser.has(&format!("{row} button")).await);
    let refused = server
        .request(Method::GET, "/api/v1/tokens", Some(&token))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    browser.screenshot("token-revoked").await;

    // Deleting a job takes typing its name.
    job(&server, "old", PIPELINE, "private").await;
    browser.goto("/jobs/old/settings").await;
    fill(&browser, "#delete-confirm", "not-old").await;
    browser.click("#delete-job").await;
    browser
        .arrive(|here| here == "/jobs/old/settings/delete")
        .await;
    assert!(
        browser
            .text(".form-error")
            .await
            .contains("type the job's name")
    );
    assert_eq!(
        server.get("/api/v1/jobs/old").await.status(),
        StatusCode::OK
    );
    fill(&browser, "#delete-confirm", "old").await;
    browser.click("#delete-job").await;
    browser.arrive(|here| here == "/jobs").await;
    assert_eq!(
        server.get("/api/v1/jobs/old").await.status(),
        StatusCode::NOT_FOUND
    );

    // A form posted without the session's form token changes nothing.
    post_form(
        &browser,
        "/admin/users",
        &[("name", "mallory"), ("admin", "true")],
        false,
    )
    .await;
    browser.arrive(|here| here == "/admin/users").await;
    assert_eq!(browser.text("h1").await, "Not allowed");
    assert!(browser.text("p.error").await.contains("out of date"));
    let users = server.json("/api/v1/users").await;
    assert!(
        !users.to_string().contains("mallory"),
        "the refused form made no user: {users}"
    );

    // The audit log shows what was done, newest first, and filters.
    browser.goto("/admin/audit").await;
    assert_eq!(browser.title().await, "Audit log · Kiln");
    let log = browser.text("#audit-log").await;
    for action in [
        "user.create",
        "token.create",
        "token.revoke",
        "job.delete",
        "user.sign_in",
    ] {
        assert!(log.contains(action), "{action} in {log}");
    }
    let first = browser
        .text("#audit-log tbody tr:first-child td:nth-child(3)")
        .await;
    assert_eq!(first, "job.delete", "newest first");
    browser.screenshot("audit").await;
    fill(&browser, "#action", "user.create").await;
    browser.click("#audit-filter button").await;
    browser
        .arrive(|here| here.starts_with("/admin/audit?") && here.contains("action=user.create"))
        .await;
    let rows = browser
        .client
        .find_all(Locator::Css("#audit-log tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 1, "only carol's creation");
    assert!(browser.text("#audit-log").await.contains("user/carol"));
}

#[tokio::test]
async fn a_maintainer_sets_a_secret_and_a_member_and_a_viewer_only_reads() {
    let server = Server::start(None);
    job(&server, "app", PIPELINE, "private").await;
    member(&server, "mia", "app", "maintainer").await;
    member(&server, "vic", "app", "viewer").await;
    let (status, body) = server
        .send(Method::POST, "/api/v1/users", json!({"name": "dave"}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    let browser = Browser::start(&server, "settings-job").await;

    // The job page links its settings.
    browser.goto("/jobs/app").await;
    browser.sign_in("mia", PASSWORD).await;
    browser.arrive(|here| here == "/jobs/app").await;
    browser.click("#job-settings").await;
    browser.arrive(|here| here == "/jobs/app/settings").await;
    assert_eq!(browser.title().await, "Settings of app · Kiln");
    browser.screenshot("settings").await;

    // A secret: saved, listed by name, its value nowhere.
    fill(&browser, "#secret-name", "DEPLOY_KEY").await;
    fill(&browser, "#secret-value", SECRET_VALUE).await;
    browser.click("#save-secret").await;
    browser
        .arrive(|here| here.starts_with("/jobs/app/settings?done=secret-saved"))
        .await;
    assert!(browser.text("#secret-list").await.contains("DEPLOY_KEY"));
    assert!(!source(&browser).await.contains(SECRET_VALUE));
    let secrets = server.json("/api/v1/jobs/app/secrets").await;
    assert_eq!(secrets[0]["name"], "DEPLOY_KEY", "{secrets}");

    // A bad name: the form again, the name kept, the value not.
    fill(&browser, "#secret-name", "NOT VALID").await;
    fill(&browser, "#secret-value", "another-typed-value").await;
    browser.click("#save-secret").await;
    browser
        .arrive(|here| here == "/jobs/app/settings/secrets")
        .await;
    assert!(
        browser
            .text(".form-error")
            .await
            .contains("not a valid secret name")
    );
    let html = source(&browser).await;
    assert!(html.contains("value=\"NOT VALID\""));
    assert!(!html.contains("another-typed-value") && !html.contains(SECRET_VALUE));
    browser.screenshot("secret-refused").await;

    // A member, added with a role, then given another.
    browser.goto("/jobs/app/settings").await;
    fill(&browser, "#member-user", "dave").await;
    browser
        .client
        .find(Locator::Css("#member-role"))
        .await
        .unwrap()
        .select_by_value("developer")
        .await
        .unwrap();
    browser.click("#add-member").await;
    browser
        .arrive(|here| here.starts_with("/jobs/app/settings?done=member-saved"))
        .await;
    assert!(browser.has("#member-list tr[data-user='dave']").await);
    browser
        .client
        .find(Locator::Css("#role-dave"))
        .await
        .unwrap()
        .select_by_value("maintainer")
        .await
        .unwrap();
    // The same address as after adding dave: wait for the new page.
    browser
        .click_to_new_page("#member-list tr[data-user='dave'] td:nth-child(2) button")
        .await;
    browser
        .arrive(|here| here.starts_with("/jobs/app/settings?done=member-saved"))
        .await;
    let members = server.json("/api/v1/jobs/app/members").await;
    let dave = members
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["user"] == "dave")
        .unwrap_or_else(|| panic!("dave is a member: {members}"));
    assert_eq!(dave["role"], "maintainer");

    // The job itself: a default branch, and the pipeline kept as it was
    // (the textarea's CR LF line ends are not stored).
    fill(&browser, "#default_branch", "trunk").await;
    browser.click("#save-job").await;
    browser
        .arrive(|here| here.starts_with("/jobs/app/settings?done=job-saved"))
        .await;
    let stored = server.json("/api/v1/jobs/app").await;
    assert_eq!(stored["default_branch"], "trunk");
    assert_eq!(stored["pipeline"], PIPELINE);
    browser.screenshot("settings-saved").await;
    fits_a_phone(&browser, "settings-phone").await;

    // A form without the session's token is refused, even from this page.
    post_form(
        &browser,
        "/jobs/app/settings/members",
        &[("user", "vic"), ("role", "maintainer")],
        false,
    )
    .await;
    browser
        .arrive(|here| here == "/jobs/app/settings/members")
        .await;
    assert!(browser.text("p.error").await.contains("out of date"));
    let members = server.json("/api/v1/jobs/app/members").await;
    assert!(
        members
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["user"] == "vic" && m["role"] == "viewer"),
        "{members}"
    );

    // A viewer reads the members but sees no form and no secret names,
    // and a form posted anyway is refused.
    browser.goto("/jobs/app").await;
    sign_out(&browser).await;
    browser.goto("/jobs/app/settings").await;
    browser.sign_in("vic", PASSWORD).await;
    browser.arrive(|here| here == "/jobs/app/settings").await;
    assert!(browser.has("#member-list tr[data-user='dave']").await);
    let forms = browser
        .client
        .find_all(Locator::Css("main form"))
        .await
        .unwrap();
    assert!(forms.is_empty(), "a viewer gets no forms");
    let html = source(&browser).await;
    assert!(!html.contains("DEPLOY_KEY") && !html.contains(SECRET_VALUE));
    browser.screenshot("viewer-settings").await;
    post_form(
        &browser,
        "/jobs/app/settings/secrets",
        &[("name", "STOLEN"), ("value", "planted-value")],
        true,
    )
    .await;
    browser
        .arrive(|here| here == "/jobs/app/settings/secrets")
        .await;
    assert_eq!(browser.text("h1").await, "Not allowed");
    assert!(browser.text("p.error").await.contains("maintainer"));
    browser.screenshot("viewer-refused").await;
    let secrets = server.json("/api/v1/jobs/app/secrets").await;
    assert_eq!(secrets.as_array().unwrap().len(), 1, "{secrets}");
    // Admin pages are for admins.
    browser.goto("/admin/users").await;
    assert_eq!(browser.text("h1").await, "Not allowed");
    assert!(!browser.has("#user-list").await);
    browser.goto("/admin/audit").await;
    assert_eq!(browser.text("h1").await, "Not allowed");

    // The audit log lists the maintainer's changes, and never the value.
    browser.goto("/").await;
    sign_out(&browser).await;
    browser.goto("/admin/audit?object=job/app").await;
    browser.sign_in("admin", ADMIN_PASSWORD).await;
    browser
        .arrive(|here| here.starts_with("/admin/audit?object="))
        .await;
    let log = browser.text("#audit-log").await;
    for line in [
        "secret.put",
        "member.set",
        "job.update",
        "job/app/secret/DEPLOY_KEY",
    ] {
        assert!(log.contains(line), "{line} in {log}");
    }
    assert!(log.contains("mia"), "{log}");
    assert!(!log.contains("STOLEN"), "the refused post changed nothing");
    assert!(!source(&browser).await.contains(SECRET_VALUE));
    browser.screenshot("audit-job").await;
}
