//! The console's script, stylesheet and icon, embedded in the binary.

/// An asset's body and content type.
pub fn get(name: &str) -> Option<(&'static str, &'static str)> {
    match name {
        "console.js" => Some((
            include_str!("assets/console.js"),
            "text/javascript; charset=utf-8",
        )),
        "console.css" => Some((
            include_str!("assets/console.css"),
            "text/css; charset=utf-8",
        )),
        "favicon.svg" => Some((include_str!("assets/favicon.svg"), "image/svg+xml")),
        _ => None,
    }
}
