//! `grexal-sidecar check`: validate a manifest and say what it declares, and the
//! warnings `run` also logs at boot.

use crate::cli::CheckArgs;
use crate::exit::ExitCode;
use crate::manifest::{AuthMode, Manifest};

/// `check`: validate a manifest and print what it declares.
pub fn check(args: &CheckArgs) -> ExitCode {
    let manifest = match Manifest::from_path(&args.path) {
        Ok(m) => m,
        Err(e) => {
            // With its causes: "No such file or directory" is the useful part of a read error.
            eprintln!(
                "grexal-sidecar: {}: {}",
                args.path.display(),
                crate::api::error::error_chain(&e)
            );
            return e.exit_code();
        }
    };
    let warnings = manifest_warnings(&manifest, false);
    if args.json {
        let connections: Vec<_> = manifest
            .connections
            .iter()
            .map(|c| serde_json::json!({"id": c.id, "display_name": c.display_name, "auth_mode": c.mode.name()}))
            .collect();
        let doc = serde_json::json!({
            "valid": true,
            "sandbox_template": manifest.sandbox_template,
            "connections": connections,
            "warnings": warnings,
        });
        println!("{doc}");
    } else {
        println!(
            "{}: valid, {} connection(s)",
            args.path.display(),
            manifest.connections.len()
        );
        for c in &manifest.connections {
            println!("  {:<24} {:<15} {}", c.id, c.mode.name(), describe(&c.mode));
        }
        if let Some(t) = &manifest.sandbox_template {
            println!("  runtime.sandbox_template = {t}");
        }
        for w in &warnings {
            println!("warning: {w}");
        }
    }
    ExitCode::Success
}

fn describe(mode: &AuthMode) -> String {
    match mode {
        AuthMode::SecretInput { fields, delivery } => {
            let names: Vec<_> = fields.iter().map(|f| f.name.as_str()).collect();
            format!("fields [{}], delivery {:?}", names.join(", "), delivery)
        }
        AuthMode::OauthRedirect { provider } => format!("scopes [{}]", provider.scopes.join(", ")),
        AuthMode::FileUpload {
            accepted_extensions,
            max_size_bytes,
            ..
        } => {
            format!(
                "extensions [{}], up to {max_size_bytes} bytes",
                accepted_extensions.join(", ")
            )
        }
        AuthMode::BrowserLogin { login_url } => {
            format!("login_url {}", login_url.as_deref().unwrap_or("-"))
        }
    }
}

/// What is valid but will not work as the developer probably expects. `desktop_forced`:
/// the desktop runs whatever the manifest says (`--desktop`).
pub fn manifest_warnings(manifest: &Manifest, desktop_forced: bool) -> Vec<String> {
    let mut warnings = Vec::new();
    if !manifest.is_desktop() && !desktop_forced {
        for c in &manifest.connections {
            if matches!(c.mode, AuthMode::BrowserLogin { .. }) {
                warnings.push(format!(
                    "connection {:?} is browser_login but runtime.sandbox_template is not \"desktop\": \
                     without --desktop, request_takeover will answer sandbox_not_desktop",
                    c.id
                ));
            }
        }
    }
    warnings
}
