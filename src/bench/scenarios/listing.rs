//! Listing pages over a storage prepared beforehand (`make bench`'s catalog group writes one in
//! distribution's layout): `GET /v2/_catalog?n=` and `GET /v2/<repo>/tags/list?n=`, the first
//! page and one from the middle (`last=`), `--page-requests` times in a row on one connection.
//! Every page must hold `--page-size` entries: an empty or short listing is an error, not a fast
//! row; a longer one (a registry ignoring `n=`, as distribution 2.8 does on tags/list) is noted.

use std::time::Instant;

use crate::bench::client::OpError;

use super::{failed, Context, Outcome, Scenario, Unit};

/// What a listing scenario GETs: the path, the JSON key of the entries, and `last=` if any.
pub(super) fn listing(
    scenario: Scenario,
    tags_repo: Option<&str>,
    catalog_last: Option<&str>,
    tags_last: Option<&str>,
) -> Result<(String, &'static str, Option<String>), String> {
    let need = |v: Option<&str>, flag: &str| {
        v.map(str::to_string)
            .ok_or_else(|| format!("{} needs {flag}", scenario.name()))
    };
    let tags_path = || need(tags_repo, "--tags-repo").map(|r| format!("v2/{r}/tags/list"));
    Ok(match scenario {
        Scenario::CatalogFirst => ("v2/_catalog".into(), "repositories", None),
        Scenario::CatalogMiddle => (
            "v2/_catalog".into(),
            "repositories",
            Some(need(catalog_last, "--catalog-last")?),
        ),
        Scenario::TagsFirst => (tags_path()?, "tags", None),
        Scenario::TagsMiddle => (tags_path()?, "tags", Some(need(tags_last, "--tags-last")?)),
        other => return Err(format!("{} is no listing", other.name())),
    })
}

impl Context<'_> {
    pub(super) async fn list_pages(&mut self, scenario: Scenario) -> Outcome {
        let a = self.args;
        let (path, key, last) = match listing(
            scenario,
            a.tags_repo.as_deref(),
            a.catalog_last.as_deref(),
            a.tags_last.as_deref(),
        ) {
            Ok(l) => l,
            Err(e) => return failed("setup", OpError(e)),
        };
        let n = a.page_size.to_string();
        let mut query = vec![("n", n.as_str())];
        if let Some(last) = &last {
            query.push(("last", last.as_str()));
        }
        let pb = self.bar(scenario, Some(a.page_requests as u64), Unit::Ops);
        let meter = self.meter();
        let mut outcome = Outcome::default();
        let mut longest = 0;
        for _ in 0..a.page_requests.max(1) {
            let t = Instant::now();
            let r = self.client.list_page(&path, &query, key).await;
            outcome.latencies.push_ms(t.elapsed());
            outcome.ops += 1;
            pb.inc(1);
            match r {
                Ok((entries, bytes)) if entries >= a.page_size => {
                    outcome.bytes += bytes;
                    longest = longest.max(entries);
                }
                Ok((entries, _)) => outcome.errors.push(OpError(format!(
                    "GET {path}: {entries} {key}, expected a full page of {}",
                    a.page_size
                ))),
                Err(e) => outcome.errors.push(e),
            }
        }
        outcome.measured = meter.finish();
        pb.finish_and_clear();
        if longest > a.page_size {
            outcome.note = Some(format!(
                "n={} ignored: pages of up to {longest} {key}",
                a.page_size
            ));
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listings_need_their_arguments() {
        assert_eq!(
            listing(Scenario::CatalogFirst, None, None, None),
            Ok(("v2/_catalog".into(), "repositories", None))
        );
        assert_eq!(
            listing(Scenario::TagsMiddle, Some("t/many"), None, Some("t050000")),
            Ok(("v2/t/many/tags/list".into(), "tags", Some("t050000".into())))
        );
        assert_eq!(
            listing(Scenario::CatalogMiddle, None, None, None),
            Err("catalog-middle needs --catalog-last".into())
        );
        assert!(listing(Scenario::TagsFirst, None, None, None).is_err());
        assert!(listing(Scenario::PullAgain, None, None, None).is_err());
    }
}
