"""The dashboard in headless chromium against a real service and worker: every page opens, every chart
draws exactly the data the API holds, a running job's curve grows over server-sent events, and the
controls follow the token's scopes. Screenshots go to test-artifacts/ui."""

from __future__ import annotations

import pytest

from tests.ui.conftest import ARTIFACTS, DATASET, SPEC, Loop

pytestmark = pytest.mark.slow


def sign_in(page, loop: Loop, token: str) -> None:
    page.goto(f"{loop.server.url}/ui")
    page.fill("#token", token)
    page.click("#sign-in button[type=submit]")


def open_page(page, hash_: str) -> None:
    """Navigate inside the app and wait until that page has drawn (the router marks it ready)."""
    page.evaluate("hash => { location.hash = hash; }", hash_)
    page.wait_for_selector(f'#page[data-ready="{hash_}"]')


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def point_counts(page) -> dict[str, int]:
    return page.eval_on_selector_all(
        "#curves figure", "figures => Object.fromEntries(figures.map(f => [f.dataset.metric, Number(f.querySelector('polyline').dataset.points)]))"
    )


def test_a_read_token_sees_every_page_and_each_chart_draws_its_data(page, loop: Loop) -> None:
    client = loop.client
    sign_in(page, loop, loop.tokens["read"])
    page.wait_for_selector('#page[data-ready="#/datasets"]')
    assert page.inner_text("#token-name").startswith("ui-read")
    assert page.locator("#datasets tbody tr").count() == min(25, len(client.list_datasets()))
    dataset = client.get_dataset(DATASET)
    row = page.inner_text(f"#datasets tbody tr:has-text('{DATASET}')")
    assert "Pendulum-v1" in row and str(dataset.rows) in row and str(dataset.episodes) in row
    shot(page, "datasets")

    # growth by source: one bar segment per (version, source) with rows; logged beside the policy's rows
    versions = client.versions(DATASET)
    open_page(page, f"#/datasets/{DATASET}")
    segments = [(f"v{v.version}", source) for v in versions for source, rows in v.sources.items() if rows > 0]
    drawn = page.eval_on_selector_all("#growth rect.bar", "bars => bars.map(b => [b.dataset.category, b.dataset.series])")
    assert sorted(map(tuple, drawn)) == sorted(segments)
    assert {"logged", f"policy:{loop.offline.policy_id}"} <= {series for _, series in drawn}
    assert page.locator("#versions tbody tr").count() == len(versions)
    assert page.locator(".write-control").count() == 0
    shot(page, "dataset")

    stats = client.version_stats(DATASET, "latest")
    open_page(page, f"#/datasets/{DATASET}/versions/{stats.version}")
    for name in ("episode_return", "episode_length", "reward"):
        histogram = getattr(stats, name).histogram
        assert histogram is not None and sum(histogram.counts) == getattr(stats, name).count
        assert page.locator(f"#histogram-{name} rect.bar").count() == len(histogram.counts), name
        heights = page.eval_on_selector_all(f"#histogram-{name} rect.bar", "bars => bars.map(b => Number(b.dataset.count))")
        assert heights == histogram.counts
    assert page.locator("#dimensions-observation g.dim").count() == 3
    assert page.locator("#dimensions-action g.dim").count() == 1
    shot(page, "version")

    open_page(page, "#/jobs")
    jobs = client.list_jobs().data
    assert page.locator("#jobs tbody tr").count() == min(25, len(jobs))
    assert page.locator("#job-form").count() == 0 and page.locator(".write-control").count() == 0
    assert page.locator('#jobs tbody tr[data-status="succeeded"]').count() == sum(job.status == "succeeded" for job in jobs[:25])

    metrics = client.job_metrics(loop.offline.id)
    open_page(page, f"#/jobs/{loop.offline.id}")
    expected = {}
    for point in metrics:
        for name in point.values:
            expected[name] = expected.get(name, 0) + 1
    assert expected and point_counts(page) == expected
    assert page.inner_text("#job-status") == "succeeded" and page.locator("#cancel-job").count() == 0
    shot(page, "job")

    open_page(page, "#/policies")
    assert page.locator("#policies tbody tr").count() == len(client.list_policies()) == 4  # two of the loop, two of the sweep
    open_page(page, f"#/policies/{loop.offline.policy_id}")
    policy = client.get_policy(loop.offline.policy_id)
    # the version it learned from -> it -> the versions it collected -> the policy fine-tuned from it
    collected = loop.collect.result["versions"]
    nodes = page.eval_on_selector_all("#lineage g.node", "nodes => nodes.map(n => n.dataset.id)")
    assert sorted(nodes) == sorted([f"v{loop.offline.version}", policy.id, *(f"v{v}" for v in collected), loop.finetuned.policy_id])
    assert page.locator("#lineage path.edge").count() == 2 + len(collected)
    assert page.locator("#evaluations tbody tr").count() == len(policy.card["evaluations"]) == 1
    returns = policy.card["evaluations"][0]["returns"]
    assert page.locator("#evaluation-returns polyline").get_attribute("data-points") == str(len(returns))
    assert page.locator("#evaluation-returns circle.point").count() == len(returns)
    assert page.locator("#downloads button").count() == len(policy.formats)
    with page.expect_download() as waiting:
        page.click('#downloads button[data-format="onnx"]')
    saved = waiting.value.path()
    assert saved is not None and open(saved, "rb").read() == client.policy_artifact(policy.id, "onnx")
    shot(page, "policy")

    open_page(page, f"#/policies/{loop.finetuned.policy_id}")
    nodes = page.eval_on_selector_all("#lineage g.node", "nodes => nodes.map(n => n.dataset.id)")
    assert sorted(nodes) == sorted([f"v{loop.finetuned.version}", loop.offline.policy_id, loop.finetuned.policy_id])
    # the sweep's leaderboard: one row per train job, one dot per policy with an estimate and a return
    open_page(page, "#/sweeps")
    assert page.locator("#sweeps tbody tr").count() == 1
    open_page(page, f"#/sweeps/{loop.sweep.id}")
    board = client.get_sweep(loop.sweep.id).leaderboard
    assert page.locator("#leaderboard tbody tr").count() == len(board.entries) == 2
    ranks = page.eval_on_selector_all("#leaderboard tbody tr td:first-child", "cells => cells.map(c => c.textContent)")
    assert ranks == [str(entry.rank) for entry in board.entries]
    assert page.locator("#estimates circle.point").count() == board.compared
    assert page.locator("#cancel-sweep").count() == 0
    shot(page, "sweep")

    # the token never went into a URL
    assert loop.tokens["read"] not in page.url


def test_a_write_token_tags_submits_and_cancels_and_a_running_curve_grows_live(page, loop: Loop) -> None:
    sign_in(page, loop, loop.tokens["write"])
    page.wait_for_selector('#page[data-ready="#/datasets"]')
    open_page(page, f"#/datasets/{DATASET}")
    # the service's refusal, naming the field, shows in the form
    page.fill("#tag-form input[name=tag]", "latest")
    page.fill("#tag-form input[name=version]", "1")
    page.click("#tag-form button[type=submit]")
    page.wait_for_selector("#tag-form .form-status.error:has-text('(tag)')")
    assert "latest" not in {tag.name for tag in loop.client.tags(DATASET)}
    page.fill("#tag-form input[name=tag]", "first-data")
    page.fill("#tag-form input[name=version]", "1")
    page.click("#tag-form button[type=submit]")
    page.wait_for_selector("#tag-form .form-status:has-text('now points at version 1')")
    assert {tag.name: tag.version for tag in loop.client.tags(DATASET)}["first-data"] == 1

    # a train job submitted from the page (the default network and steps: it runs until cancelled)
    open_page(page, "#/jobs")
    page.select_option("#job-form select[name=kind]", "train")
    page.select_option("#job-form select[name=algorithm]", "bc")
    page.fill("#job-form input[name=version]", "first-data")
    page.click("#job-form button[type=submit]")
    page.wait_for_function("() => /^#\\/jobs\\/[^/]+$/.test(location.hash)")
    job_id = page.evaluate("() => location.hash").rsplit("/", 1)[1]
    job = loop.client.get_job(job_id)
    assert (job.kind, job.algorithm, job.version, job.requested_version) == ("train", "bc", 1, "first-data")
    page.wait_for_selector(f'#page[data-ready="#/jobs/{job_id}"]')
    page.wait_for_selector("#job-status:has-text('running')", timeout=120_000)

    # the curve gains points over the event stream, without reloading the page
    page.wait_for_function("() => Number(document.querySelector('#curves polyline')?.dataset.points) >= 2", timeout=120_000)
    page.evaluate("() => { window.sameDocument = true; }")
    first = max(point_counts(page).values())
    page.wait_for_function(f"() => Number(document.querySelector('#curves polyline').dataset.points) > {first}", timeout=60_000)
    assert page.evaluate("() => window.sameDocument") is True
    shot(page, "job-running")

    page.click("#cancel-job")
    page.wait_for_selector("#job-status:has-text('cancelled')")
    assert loop.client.get_job(job_id).status == "cancelled"
    assert page.locator("#cancel-job").is_hidden()

    # a running sweep has a cancel control for this token, and it cancels the sweep
    sweep = loop.client.submit_sweep({"dataset": DATASET, "version": 1, "algorithms": ["bc"], "steps": 100_000, "split": loop.sweep.split.model_dump()})
    open_page(page, f"#/sweeps/{sweep.id}")
    page.click("#cancel-sweep")
    page.wait_for_selector(f'#page[data-ready="#/sweeps/{sweep.id}"] .facts .status.cancelled')
    assert loop.client.get_sweep(sweep.id).status == "cancelled" and page.locator("#cancel-sweep").count() == 0


def test_a_bad_token_and_a_worker_token_see_the_sign_in_page(page, loop: Loop) -> None:
    sign_in(page, loop, "rb_not-a-token")
    page.wait_for_selector("#sign-in-error")
    assert "unknown or has been revoked" in page.inner_text("#sign-in-error")
    assert page.locator("#nav").is_hidden() and page.evaluate("() => sessionStorage.length") == 0

    sign_in(page, loop, loop.tokens["worker"])
    page.wait_for_selector("#sign-in-error")
    assert "worker token" in page.inner_text("#sign-in-error") and page.locator("#nav").is_hidden()
    shot(page, "worker-token-refused")

    # a token revoked while signed in: the next page it opens is the sign-in page again
    spare = loop.client.create_token("ui-spare", ["read"]).token
    sign_in(page, loop, spare)
    page.wait_for_selector('#page[data-ready="#/datasets"]')
    assert page.evaluate("() => sessionStorage.getItem('replaybank.token')") == spare
    loop.client.revoke_token("ui-spare")
    page.evaluate("() => { location.hash = '#/jobs'; }")
    page.wait_for_selector("#sign-in-error")
    assert page.evaluate("() => sessionStorage.length") == 0


def test_lists_page_with_the_cursor(page, loop: Loop) -> None:
    for number in range(27):
        loop.client.create_dataset(f"extra-{number:02d}", SPEC)
    total = len(loop.client.list_datasets())
    sign_in(page, loop, loop.tokens["read"])
    page.wait_for_selector('#page[data-ready="#/datasets"]')
    assert page.locator("#datasets tbody tr").count() == 25 and page.locator("button.more").is_visible()
    page.click("button.more")
    page.wait_for_function(f"() => document.querySelectorAll('#datasets tbody tr').length === {total}")
    names = page.eval_on_selector_all("#datasets tbody tr td:first-child", "cells => cells.map(c => c.textContent)")
    assert sorted(names) == sorted(dataset.name for dataset in loop.client.list_datasets()) and len(set(names)) == total
    assert page.locator("button.more").is_hidden() and page.inner_text(".count") == f"{total} of {total}"
