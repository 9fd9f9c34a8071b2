//! Figures of a data set with more than 1,000 tenants (`--tenants 1000000`): point reads spread over every tenant against the same reads over 1,000 of them, one server, interleaved runs, so the difference is what the server's and PostgreSQL's caches do with many tenants; and the server's peak memory under that load.

use tokio_postgres::Client;

use super::{rss_figure, Ctx, SERVER_POOL};
use crate::{
    dataset::{self, Sizes, Spread},
    load::{wrk_file_script, Wrk},
    report::{Figure, Goal, RatioKind},
    server::ServerChild,
};

/// The tenants the baseline reads spread over.
const FEW: i32 = 1000;

/// `1m` for a million, else the number (`2000`): figure names say the scale.
fn scale_label(tenants: i32) -> String {
    super::count_label(tenants.into(), 1_000_000, 'm')
}

/// `api_point_read_<n>_tenants` and `server_rss_mb_<n>_tenants`, when the
/// data set has more than 1,000 tenants.
pub(super) async fn scale_figures(
    ctx: &mut Ctx,
    su: &Client,
    sizes: Sizes,
    admin_token: &str,
) -> anyhow::Result<()> {
    let label = scale_label(sizes.tenants);
    let point = format!("api_point_read_{label}_tenants");
    let rss = format!("server_rss_mb_{label}_tenants");
    if sizes.tenants <= FEW || !(ctx.wanted(&point) || ctx.wanted(&rss)) {
        return Ok(());
    }
    dataset::ensure_keys(su, sizes, ctx.opts.smoke).await?;
    let few_file = ctx.work.join("targets-few.txt");
    let all_file = ctx.work.join("targets-all.txt");
    let few_count = dataset::write_point_targets(su, sizes, Spread::Few(FEW), &few_file).await?;
    let all_count = dataset::write_point_targets(su, sizes, Spread::All, &all_file).await?;
    let few_lua = wrk_file_script(&ctx.work, "point-few", &few_file)?;
    let all_lua = wrk_file_script(&ctx.work, "point-all", &all_file)?;

    // A server of its own, configured as api_point_read's (request log on),
    // so its peak memory is this load's.
    let server = ServerChild::start(
        &ctx.db.server,
        &ctx.db.context_key,
        admin_token,
        true,
        SERVER_POOL,
    )?;
    let idle_rss = server.memory_mb()?.0;
    for script in [&few_lua, &all_lua] {
        Wrk {
            url: &server.url,
            script,
            connections: ctx.opts.clients,
            seconds: 1,
        }
        .run(&ctx.tools)?;
    }
    let (mut all, mut few) = (vec![], vec![]);
    for _ in 0..ctx.opts.runs {
        all.push(ctx.wrk(&server.url, &all_lua)?);
        few.push(ctx.wrk(&server.url, &few_lua)?);
    }
    let peak_rss = server.memory_mb()?.1;
    ctx.push(Figure::new(
        &point,
        "req/s",
        &format!(
            "GET /v1/resources/{{id}} (wrk), keys of all {} tenants ({all_count} targets)",
            sizes.tenants
        ),
        all,
        Some((
            &format!("the same server and requests over {FEW} of the tenants ({few_count} targets), runs interleaved"),
            few,
        )),
        RatioKind::ValueOverBaseline,
        Some(Goal::RatioAtLeast(0.9)),
    ));
    ctx.push(rss_figure(
        &rss,
        &format!(
            "server peak resident memory (VmHWM) through point reads over 1,000 and all {} tenants",
            sizes.tenants
        ),
        peak_rss,
        idle_rss,
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::scale_label;

    #[test]
    fn figure_names_say_a_million_as_1m_and_other_counts_in_full() {
        assert_eq!(scale_label(1_000_000), "1m");
        assert_eq!(scale_label(2_000), "2000");
        assert_eq!(scale_label(1_500_000), "1500000");
    }
}
