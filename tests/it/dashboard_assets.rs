//! The dashboard's embedded files (`planledger_api::UI_ASSETS`, the bytes `/ui` serves) name no
//! external URL: the page must work with no network beyond the service, so nothing may be
//! loaded from a CDN or sent elsewhere (the browser test also checks every request it sees).

use planledger_api::UI_ASSETS;

/// Every `scheme://` or protocol-relative `//host` reference in a text, with its line.
fn external_references(text: &str) -> Vec<(usize, String)> {
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let lower = line.to_ascii_lowercase();
        for marker in ["http://", "https://", "ws://", "wss://", "ftp://"] {
            if lower.contains(marker) {
                found.push((number + 1, line.trim().to_owned()));
            }
        }
        // `src="//cdn..."`, `href='//...'`, `url(//...)`, `@import "//..."`, `import "//..."`.
        for opener in ["\"//", "'//", "(//", "`//"] {
            if lower.contains(opener) {
                found.push((number + 1, line.trim().to_owned()));
            }
        }
    }
    found
}

#[test]
fn embedded_assets_name_no_external_url() {
    for (name, _, body) in UI_ASSETS {
        let found = external_references(body);
        assert!(
            found.is_empty(),
            "{name} refers outside the service (the dashboard must work offline): {found:?}"
        );
    }
}

#[test]
fn the_external_url_check_finds_what_it_looks_for() {
    let page = "<script src=\"https://cdn.example/x.js\"></script>\n<img src=\"//cdn.example/a.png\">\n@import url(//fonts.example/f.css);";
    let lines: Vec<usize> = external_references(page).iter().map(|(n, _)| *n).collect();
    assert_eq!(lines, vec![1, 2, 3]);
    assert!(external_references("fetch(\"/v1/plans\")").is_empty());
}

#[test]
fn every_file_the_page_loads_is_embedded() {
    let index = UI_ASSETS
        .iter()
        .find(|(n, _, _)| *n == "index.html")
        .map(|(_, _, body)| *body)
        .expect("index.html is embedded");
    for (name, _, body) in UI_ASSETS {
        if *name == "index.html" {
            continue;
        }
        let referenced = index.contains(&format!("\"{name}\""))
            || UI_ASSETS
                .iter()
                .any(|(_, _, other)| other.contains(&format!("\"./{name}\"")));
        assert!(referenced, "{name} is embedded but nothing loads it");
        assert!(!body.is_empty(), "{name} is empty");
    }
}
