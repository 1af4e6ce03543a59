"""The pipeline with its models behind an endpoint: vLLM's own OpenAI-compatible server on the CPU
with the embedded model on a loopback port, guarded by a planted API key, and prefgen's CLI
running generation and judging against it (no engine inside the job: one server start only).

First a run whose worker holds a wrong key: the server answers 401, the run stops early with
the endpoint's message (exit 3) and commits nothing of the pipeline. Then the same command with
the right key resumes and finishes. Rows add up, the manifest's endpoint counts agree with the
roles' requests, and neither key appears in any output file or in either run's log.
"""

import glob
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from support.ports import free_ports

pytestmark = pytest.mark.integration

KEY = "sk-prefgen-planted-7f3a9c1e5b"
WRONG_KEY = "sk-prefgen-wrong-0d8e2b4f6a"
INSTRUCTIONS = ["What is synthetic data?", "Name a use of a hash function.", "Why is the sky blue?"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """vLLM's OpenAI-compatible server with the embedded model, started the way prefgen starts an engine."""
    from prefgen.models.embedded import resolve_model
    from prefgen.engines.arguments import resolve_dtype

    log = tmp_path_factory.mktemp("server") / "server.log"
    (port,) = free_ports()
    # the model inside the engine core, as in prefgen's engine actors (engines/arguments.device_kwargs)
    env = {**os.environ, "VLLM_API_KEY": KEY, "VLLM_CPU_OMP_THREADS_BIND": "nobind", "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", resolve_model(
        "embedded://SmolLM2-135M-Instruct"), "--served-model-name", "smol", "--host", "127.0.0.1", "--port",
        str(port), "--max-model-len", "2048", "--dtype", resolve_dtype("auto", "cpu"), "--enforce-eager",
        "--kv-cache-memory-bytes", str(2**30), "--disable-log-stats", "--distributed-executor-backend", "uni",
        # what the in-job engine asks per request: no free whitespace inside JSON (small models fill it)
        "--structured-outputs-config", '{"backend": "xgrammar", "disable_any_whitespace": true}']
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the vLLM server exited with {proc.returncode}: {log.read_text()[-3000:]}")
            if time.monotonic() - started > 600:
                pytest.fail(f"the vLLM server did not start in 600 s: {log.read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                time.sleep(2)
        print(f"\n[endpoint test] vLLM server ready in {time.monotonic() - started:.0f} s")
        yield {"url": f"http://127.0.0.1:{port}/v1", "log": log}
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()


def config(url: str, work: Path) -> Path:
    inp = work / "in.jsonl"
    inp.write_text("".join(json.dumps({"instruction": t}) + "\n" for t in INSTRUCTIONS) + '{"no_field": 1}\n')
    cfg = {
        "input": {"path": str(inp)},
        "models": {"smol-api": {"kind": "endpoint", "base_url": url, "model": "smol", "api_key_env": "PREFGEN_IT_KEY",
                                "timeout_s": 300, "max_in_flight": 8, "retries": 2, "batch_size": 2,
                                "price_prompt_per_mtok": 0.5, "price_completion_per_mtok": 1.5}},
        "generators": [{"name": "gen", "model": "smol-api", "num_completions": 2,
                        "sampling": {"temperature": 1.0, "max_tokens": 32}}],
        "evolution": {"enabled": False},
        "judge": {"model": "smol-api", "permutations": 1, "rationales": False, "max_retries": 1,
                  "sampling": {"temperature": 0.0, "max_tokens": 48}},
        "pairing": {"min_margin": 1, "allow_truncated_chosen": True},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def cli(path: Path, out: Path, key: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFGEN_IT_KEY": key}
    return subprocess.run([sys.executable, "-m", "prefgen.cli", "run", str(path), "--output", str(out)],
                          capture_output=True, text=True, timeout=1200, env=env)


def test_endpoint_roles_stop_on_a_bad_key_then_resume_and_finish(server, tmp_path):
    path, out = config(server["url"], tmp_path), tmp_path / "out"
    started = time.monotonic()
    bad = cli(path, out, WRONG_KEY)
    bad_s = time.monotonic() - started
    assert bad.returncode == 3, bad.stdout[-2000:] + bad.stderr[-3000:]
    assert "run stopped" in bad.stderr and "HTTP 401" in bad.stderr and "endpoint smol-api (smol at" in bad.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "HTTP 401" in manifest["attempts"][-1]["error"]
    # the stopped attempt's own counts: its generation requests, each refused (at most one per row)
    stopped = manifest["endpoints"]["smol-api"]
    refused = stopped["http_errors"].get("401", 0)
    assert 1 <= refused <= 3 and stopped["requests"] == refused and stopped["completion_tokens"] == 0
    assert not glob.glob(f"{out}/pairs/*.parquet")  # nothing of the pipeline was committed

    good = cli(path, out, KEY)
    good_s = time.monotonic() - started - bad_s
    assert good.returncode == 0, good.stdout[-2000:] + good.stderr[-3000:]
    print(f"\n[endpoint test] stopped run {bad_s:.0f} s, resumed run {good_s:.0f} s")
    s = json.loads((out / "manifest.json").read_text())
    pairs = [r for f in glob.glob(f"{out}/pairs/*.parquet") for r in pq.read_table(f).to_pylist()]
    rejects = [r for f in glob.glob(f"{out}/rejects/*.parquet") for r in pq.read_table(f).to_pylist()]
    assert s["status"] == "complete" and s["input_rows"] == 4
    assert s["paired_rows"] + sum(s["rejects"].values()) == 4 == len({p["id"] for p in pairs}) + len(rejects)
    assert s["rejects"].get("missing_field") == 1 and s["candidates"]["generated"] == 6
    # the 135M judge often ties its two candidates (all_tied): the candidates are checked wherever they landed
    cands = [c for r in pairs + rejects for c in r["candidates"]]
    assert len(cands) == 6 and all(c["model"] == "smol" for c in cands)
    assert s["candidates"]["rated"] >= 1 and s["judging"]["judge_calls"] == 3  # ratings came back over HTTP

    e = s["endpoints"]["smol-api"]
    roles = s["roles"]
    # the pair check asks the endpoint too (on by default for a generative judge, an endpoint's included)
    assert set(roles) == {"generate:gen", "judge:judge", "verify:judge"}
    role_requests = sum(r["requests"] for r in roles.values())
    assert roles["generate:gen"]["requests"] == 3 and roles["judge:judge"]["requests"] >= 3
    # this attempt's HTTP requests (engine figures are per attempt): one per role request, plus
    # retries, fallbacks and top-ups; none refused
    assert "401" not in e["http_errors"]
    assert [a.get("endpoints", {}).get("smol-api", {}).get("http_errors", {}).get("401") for a in s["attempts"]] == [
        refused, None]  # each attempt's calls stay in the history
    assert e["requests"] == role_requests + e["retries"] + e["schema_fallbacks"] + e["top_ups"]
    assert e["failed"] == 0 and e["prompt_tokens"] > 0 and e["completion_tokens"] > 0
    assert e["completion_tokens"] == sum(r["output_tokens"] for r in roles.values())
    assert s["verification"]["verify_calls"] == 2 * s["verification"]["pairs_checked"]  # both orders of every pair
    assert e["cost"] == pytest.approx((e["prompt_tokens"] * 0.5 + e["completion_tokens"] * 1.5) / 1e6)
    assert "endpoint smol-api (smol at" in good.stdout and "cost:" in good.stdout

    logs = bad.stdout + bad.stderr + good.stdout + good.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and (out / "manifest.json") in files
    for secret in (KEY, WRONG_KEY, KEY[:12], WRONG_KEY[:12]):
        assert secret not in logs
        leaked = [str(p) for p in files if secret.encode() in p.read_bytes()]
        assert not leaked, f"the key is in {leaked}"
