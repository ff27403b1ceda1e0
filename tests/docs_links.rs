//! The documentation's links hold: every relative link and `#anchor` in `README.md` and
//! `docs/*.md` points at a file that exists and, for an anchor, at a heading of that file
//! as GitHub names it. Also keeps the README a front door (short, with a config that loads).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use omnigate::config::Config;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// GitHub's anchor for a heading: lowercase, punctuation dropped (letters, digits, `-` and
/// `_` stay), each space a `-`; inline markup counts by its text.
fn slug(heading: &str) -> String {
    visible_text(heading)
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// A heading's text as rendered: link targets and emphasis markers dropped.
fn visible_text(heading: &str) -> String {
    let mut text = String::new();
    let mut rest = heading;
    while let Some(open) = rest.find("](") {
        let close = rest[open..].find(')').map_or(rest.len(), |i| open + i + 1);
        text.push_str(&rest[..open]);
        rest = &rest[close..];
    }
    text.push_str(rest);
    text.replace(['[', '*', '`'], "")
}

/// The anchors of a page's headings, in order, with GitHub's `-1`, `-2` for repeats.
fn anchors(markdown: &str) -> Vec<String> {
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut out = Vec::new();
    for line in prose_lines(markdown) {
        let hashes = line.chars().take_while(|&c| c == '#').count();
        if !(1..=6).contains(&hashes) || !line[hashes..].starts_with(' ') {
            continue;
        }
        let base = slug(line[hashes..].trim());
        let n = seen.entry(base.clone()).or_insert(0);
        out.push(if *n == 0 { base } else { format!("{base}-{n}") });
        *n += 1;
    }
    out
}

/// The lines outside fenced code blocks and HTML comments.
fn prose_lines(markdown: &str) -> Vec<String> {
    let mut text = String::new();
    let mut rest = markdown;
    while let Some(open) = rest.find("<!--") {
        text.push_str(&rest[..open]);
        rest = rest[open..]
            .find("-->")
            .map_or("", |end| &rest[open + end + 3..]);
    }
    text.push_str(rest);
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line.to_string());
        }
    }
    lines
}

/// Inline code spans removed, paragraph by paragraph (a span may wrap a line; a lone
/// backtick is literal).
fn without_code_spans(paragraph: &str) -> String {
    let parts: Vec<&str> = paragraph.split('`').collect();
    let pairs = (parts.len() - 1) / 2 * 2;
    let mut out = String::new();
    for (i, part) in parts.iter().enumerate() {
        if i % 2 == 0 || i > pairs {
            if i > pairs {
                out.push('`');
            }
            out.push_str(part);
        }
    }
    out
}

/// Every link target (`[text](target)` and images) outside code and comments.
fn link_targets(markdown: &str) -> Vec<String> {
    let prose = prose_lines(markdown).join("\n");
    let mut targets = Vec::new();
    for paragraph in prose.split("\n\n") {
        let text = without_code_spans(paragraph);
        let mut rest = text.as_str();
        while let Some(open) = rest.find("](") {
            let after = &rest[open + 2..];
            let end = after.find(')').unwrap_or(after.len());
            let target = after[..end].split_whitespace().next().unwrap_or_default();
            targets.push(target.to_string());
            rest = &after[end..];
        }
    }
    targets
}

/// What is wrong with each relative link of `page` (empty when all resolve).
fn broken_links(page: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(page).unwrap();
    let dir = page.parent().unwrap();
    let mut broken = Vec::new();
    for target in link_targets(&text) {
        if target.contains("://") || target.starts_with("mailto:") {
            continue;
        }
        let (path, anchor) = match target.split_once('#') {
            Some((path, anchor)) => (path, Some(anchor)),
            None => (target.as_str(), None),
        };
        let file = if path.is_empty() {
            page.to_path_buf()
        } else {
            dir.join(path)
        };
        if !file.exists() {
            broken.push(format!("{}: {target}: no such file", page.display()));
            continue;
        }
        if let Some(anchor) = anchor {
            let found = file.extension().is_some_and(|e| e == "md")
                && anchors(&std::fs::read_to_string(&file).unwrap()).contains(&anchor.into());
            if !found {
                broken.push(format!("{}: {target}: no such heading", page.display()));
            }
        }
    }
    broken
}

fn pages() -> Vec<PathBuf> {
    let mut pages = vec![Path::new(ROOT).join("README.md")];
    for entry in std::fs::read_dir(Path::new(ROOT).join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            pages.push(path);
        }
    }
    pages.sort();
    pages
}

#[test]
fn every_relative_link_and_anchor_in_the_readme_and_docs_resolves() {
    let pages = pages();
    assert!(pages.len() > 10, "the docs pages: {pages:?}");
    let broken: Vec<String> = pages.iter().flat_map(|p| broken_links(p)).collect();
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn every_docs_page_is_in_the_docs_index() {
    let index = std::fs::read_to_string(Path::new(ROOT).join("docs/README.md")).unwrap();
    let linked = link_targets(&index);
    for page in pages() {
        let name = page.file_name().unwrap().to_str().unwrap().to_string();
        if page.parent().unwrap().ends_with("docs") && name != "README.md" {
            assert!(
                linked.contains(&name),
                "docs/README.md does not link {name}"
            );
        }
    }
}

#[test]
fn anchors_follow_githubs_rules() {
    let page = "# Top\n## Gateway health (`/healthz`)\n## Keys, limits and usage\n\
                ```sh\n# not a heading\n```\n## Top\n## Top\n### `[queue]` and **bold**\n\
                ## A [linked](http://x.y) word\n<!--\n## hidden\n-->\n## Ünïcode_snake-case";
    assert_eq!(
        anchors(page),
        [
            "top",
            "gateway-health-healthz",
            "keys-limits-and-usage",
            "top-1",
            "top-2",
            "queue-and-bold",
            "a-linked-word",
            "ünïcode_snake-case",
        ]
    );
}

#[test]
fn a_broken_link_or_anchor_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("b.md"), "# B\n## Real part\n").unwrap();
    let page = dir.path().join("a.md");
    std::fs::write(
        &page,
        "# A\nSee [b](b.md#real-part), [top](#a), [ok](b.md), `[code](nowhere.md)`,\n\
         [web](https://example.com/x#y), and\n```\n[fenced](gone.md)\n```\n\
         [gone](missing.md), [typo](b.md#real-parts), [here](#nothing) and <!-- [c](c.md) -->.\n",
    )
    .unwrap();
    let broken = broken_links(&page);
    assert_eq!(broken.len(), 3, "{broken:#?}");
    assert!(
        broken[0].ends_with("missing.md: no such file"),
        "{broken:#?}"
    );
    assert!(
        broken[1].ends_with("b.md#real-parts: no such heading"),
        "{broken:#?}"
    );
    assert!(
        broken[2].ends_with("#nothing: no such heading"),
        "{broken:#?}"
    );
}

#[test]
fn the_readme_stays_a_front_door() {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let lines = readme.lines().count();
    assert!(
        lines <= 250,
        "README.md has {lines} lines; move detail to docs/"
    );
}

/// The `toml` block under the README's `<!-- minimal-config -->` marker.
fn minimal_config() -> String {
    let readme = std::fs::read_to_string(Path::new(ROOT).join("README.md")).unwrap();
    let after = readme
        .split_once("<!-- minimal-config -->")
        .expect("README has a <!-- minimal-config --> marker")
        .1;
    let body = after
        .trim_start()
        .strip_prefix("```toml\n")
        .expect("a ```toml block right after the marker");
    body.split_once("\n```")
        .expect("the block ends")
        .0
        .to_string()
}

#[test]
fn the_readmes_minimal_config_loads_with_one_real_provider_and_no_sandbox() {
    let toml = minimal_config();
    let cfg = Config::from_toml_str(&toml, |var| {
        (var == "ANYFAST_API_KEY").then(|| "sk-test".to_string())
    })
    .expect("the README's minimal config loads");
    assert_eq!(cfg.providers.keys().collect::<Vec<_>>(), ["anyfast"]);
    assert!(
        !cfg.sandbox_wanted(),
        "a real provider turns the sandbox off"
    );

    let err = Config::from_toml_str(&toml, |_| None)
        .expect_err("without the credential start-up stops")
        .to_string();
    assert!(err.contains("ANYFAST_API_KEY"), "{err}");
}
