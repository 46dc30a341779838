"""The OpenAI-compatible planner server as a real process, and the HTTP planner backend against it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from servers import free_port, stop_process

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def server(tmp_path_factory):
    """A tiny compact-prompt planner saved to disk and served by ``builder.planner.server``."""
    import httpx

    from builder.planner.backends import TransformersPlanner
    from builder.planner.default import build_model, build_tokenizer, pairs_of, seed_shots

    pairs = pairs_of(seed_shots(30, seed=5))
    tok = build_tokenizer([p + c for p, c in pairs], vocab_size=400)
    model = build_model(len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                        num_attention_heads=2, num_key_value_heads=1)
    path = TransformersPlanner(model, tok, prompt_style="compact", max_new_tokens=16).save(
        tmp_path_factory.mktemp("served"))
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "OPENAI_API_KEY": ""}
    proc = subprocess.Popen([sys.executable, "-m", "builder.planner.server", "--model", str(path), "--port",
                             str(port), "--name", "tiny"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the planner server exited: {proc.stdout.read()[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.3)
    else:
        proc.kill()
        raise RuntimeError("the planner server did not start in 120 s")
    yield url
    stop_process(proc)


@pytest.mark.parametrize("mode", ["chat", "completions"])
def test_openai_planner_against_real_server(server, mode):
    from builder.planner.backends import OpenAIPlanner
    from builder.planner.prompt import PlanRequest

    planner = OpenAIPlanner(server, "tiny", mode=mode, prompt_style="compact", max_tokens=12, timeout=60)
    out = planner.propose([PlanRequest("How many red circles are there?", "vqa"), ("grounding", "the red circle")],
                          k=3, temperature=1.0, top_p=0.9)
    assert len(out) == 2 and all(len(c) == 3 and all(isinstance(s, str) for s in c) for c in out)
    # greedy over HTTP equals greedy in process (same weights, same prompt)
    greedy = planner.propose([("vqa", "Count the red circles.")], k=1, temperature=0)[0][0]
    assert planner.propose([("vqa", "Count the red circles.")], k=1, temperature=0)[0][0] == greedy
    planner.close()


def test_server_models_route_and_bad_requests(server):
    import httpx

    from builder.planner.backends import OpenAIPlanner, PlannerError

    assert httpx.get(f"{server}/v1/models").json()["data"][0]["id"] == "tiny"
    r = httpx.post(f"{server}/v1/chat/completions", json={"model": "tiny", "messages": "hi"})
    assert r.status_code == 400
    planner = OpenAIPlanner(server, "tiny", prompt_style="compact")
    with pytest.raises(PlannerError, match="HTTP 400"):
        planner.propose(["Count the red circles."], k=65)  # n above the server's cap


def test_openai_planner_clear_errors_and_api_key(monkeypatch):
    import httpx

    from builder.planner.backends import OpenAIPlanner, PlannerError

    port = free_port()  # nothing listens there
    with pytest.raises(PlannerError, match="cannot reach"):
        OpenAIPlanner(f"http://127.0.0.1:{port}", "m", timeout=2).propose(["q"], k=1)
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["auth"] = request.headers.get("authorization")
        seen["url"] = str(request.url)
        return httpx.Response(200, json={"choices": [{"index": 0, "text": "no code here"}]})

    monkeypatch.setenv("MY_PLANNER_KEY", "sk-test")
    planner = OpenAIPlanner("http://x.invalid", "m", mode="completions", api_key_env="MY_PLANNER_KEY")
    planner._client = httpx.Client(transport=httpx.MockTransport(handler), headers=planner._client.headers)
    # one choice per reply although n=2 was asked: the planner asks again for the rest
    assert planner.propose(["q"], k=2) == [["no code here", "no code here"]]
    assert seen["auth"] == "Bearer sk-test" and seen["url"].endswith("/v1/completions")
    bad = OpenAIPlanner("http://x.invalid", "m", mode="chat")
    bad._client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(200, json={"oops": 1})))
    with pytest.raises(PlannerError, match="malformed"):
        bad.propose(["q"], k=1)
