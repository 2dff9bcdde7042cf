import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from pointalign.cli import main
from pointalign.errors import JudgeError
from pointalign.eval import judge_prompts as jp
from pointalign.eval.judge import account, object_scores, run_judge
from pointalign.eval.offline_judge import closed_reply, offline_replies
from pointalign.eval.openai_judge import OpenAIJudge, openai_replies


def test_parsers():
    assert jp.parse_open("T#same") == 1 and jp.parse_open(" F# no") == 0
    assert jp.parse_open("") is None and jp.parse_open("Maybe") is None
    assert jp.parse_closed("8#chair#four legs", 40) == 8
    assert jp.parse_closed("-1#NA#Cannot infer", 40) is None
    assert jp.parse_closed("45#x#out of range", 40) is None
    assert jp.parse_closed("chair", 40) is None and jp.parse_closed("", 40) is None
    assert jp.parse_caption("73#good") == 73 and jp.parse_caption("150#too high") is None
    assert jp.parse_caption("") is None and jp.parse_caption("great#") is None


def test_open_accounting_by_hand():
    results = [{"ground_truth": "x"}] * 5
    acc = account("open", results, ["T#", "F#", "T#", "??", ""])
    assert acc["invalid"] == 2
    assert acc["accuracy"] == pytest.approx(100 * 2 / 3) and acc["raw_accuracy"] == pytest.approx(40.0)


def test_closed_accounting_counts_each_invalid_once():
    results = [{"ground_truth": g} for g in (1, 2, 3, 4, 5, 6)]
    replies = ["1#a#", "9#b#", "-1#NA#x", "garbage", "5#c#", "99#d#"]
    acc = account("closed", results, replies, num_classes=10)
    rng = np.random.default_rng(0)
    draws = [int(rng.integers(10)) for _ in range(3)]  # items 3, 4 and 6 are invalid, in order
    random_hits = sum(d == g for d, g in zip(draws, (3, 4, 6)))
    assert acc["invalid"] == 3 and acc["random_hits"] == random_hits
    assert acc["clean_accuracy"] == pytest.approx(100 * 2 / 3)  # valid: 1 (right), 9 (wrong), 5 (right)
    assert acc["accuracy"] == pytest.approx(100 * (2 + random_hits) / 6)
    assert [r["invalid"] for r in acc["rows"]] == [False, False, True, True, False, True]


def test_caption_accounting():
    acc = account("caption", [{}] * 4, ["80#", "101#", "40#", "n/a"])
    assert acc["invalid"] == 2 and acc["average_score"] == pytest.approx(60.0)
    assert object_scores("caption", acc["rows"]) == [80.0, 0.0, 40.0, 0.0]  # invalid replies score 0


def test_object_scores_count_wrong_and_invalid_as_zero():
    acc = account("open", [{"ground_truth": "x"}] * 5, ["T#", "F#", "T#", "??", ""])
    assert object_scores("open", acc["rows"]) == [1.0, 0.0, 1.0, 0.0, 0.0]  # mean 40 % = raw_accuracy
    results = [{"ground_truth": g} for g in (1, 2, 3, 4)]
    acc = account("closed", results, ["1#a#", "9#b#", "-1#NA#x", "4#c#"], num_classes=10)
    hit_by_chance = {**acc["rows"][2], "correct": 1}  # an invalid reply whose random class hit
    assert object_scores("closed", [*acc["rows"][:2], hit_by_chance, acc["rows"][3]]) == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="unknown judge kind"):
        object_scores("other", [])


def test_offline_close_set_rules():
    names = ["airplane", "chair", "table", "night stand"]
    assert closed_reply("This is a wooden chair next to a table.", names).startswith("1#chair")
    assert closed_reply("A small bedside table", names).startswith("3#night stand")  # synonym, earliest
    assert closed_reply("An aircraft.", names).startswith("0#")
    assert closed_reply("Something round.", names).startswith("-1#NA")


# ---------------------------------------------------------------------------------------------------------------
# A real HTTP server on 127.0.0.1


class Script:
    """What the server answers, per item id found in the request: a list of behaviours, one per request."""

    def __init__(self, plan):
        self.plan = {k: list(v) for k, v in plan.items()}
        self.requests: dict[str, int] = {}
        self.lock = threading.Lock()

    def next(self, body: str) -> str:
        with self.lock:
            key = next(k for k in self.plan if k in body)
            self.requests[key] = self.requests.get(key, 0) + 1
            steps = self.plan[key]
            return steps.pop(0) if len(steps) > 1 else steps[0]


def serve(script: Script):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            assert self.path == "/v1/chat/completions"
            action = script.next(body)
            if action.startswith("status:"):
                self.send_response(int(action.split(":")[1]))
                self.end_headers()
                self.wfile.write(b"server error")
                return
            if action == "sleep":
                time.sleep(1.0)
                action = "reply:T#late"
            if action == "html":
                payload = b"<html>not json</html>"
            else:
                content = action.split(":", 1)[1]
                payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def write_results(tmp_path, n=6):
    path = tmp_path / "PointLLM_brief_description_val_200_GT_Objaverse_classification_prompt0.json"
    results = [
        {"object_id": f"obj{i}", "ground_truth": f"a thing obj{i}", "model_output": f"answer obj{i}"} for i in range(n)
    ]
    path.write_text(json.dumps({"prompt": "What is this?", "results": results}))
    return path


def judge_for(server, **kw):
    return OpenAIJudge(
        f"http://127.0.0.1:{server.server_address[1]}/v1",
        "judge-x",
        api_key="k",
        backoff=0.01,
        timeout=0.3,
        workers=3,
        **kw,
    )


def test_openai_judge_retries_and_counts_exactly(tmp_path):
    script = Script(
        {
            "obj0": ["reply:T#fine"],
            "obj1": ["status:500", "status:503", "reply:F#wrong"],  # retried until it answers
            "obj2": ["sleep", "reply:T#after a timeout"],  # client timeout, then retried
            "obj3": ["html", "reply:T#after a malformed body"],  # not a chat completion: retried
            "obj4": ["reply:"],  # empty reply: a verdict, INVALID
            "obj5": ["reply:Probably#yes"],  # malformed reply: INVALID
        }
    )
    server = serve(script)
    try:
        path = write_results(tmp_path)
        out = run_judge(
            path, openai_replies(judge_for(server), tmp_path / "cache.jsonl"), "judge-x", print_fn=lambda *_: None
        )
    finally:
        server.shutdown()
    report = json.loads(out.read_text())
    assert report["total"] == 6 and report["invalid"] == 2
    assert report["accuracy"] == pytest.approx(100 * 3 / 4) and report["raw_accuracy"] == pytest.approx(50.0)
    assert script.requests == {"obj0": 1, "obj1": 3, "obj2": 2, "obj3": 2, "obj4": 1, "obj5": 1}


def test_interrupted_judge_resumes_without_repeating(tmp_path):
    path = write_results(tmp_path)
    cache = tmp_path / "cache.jsonl"
    down = Script({**{f"obj{i}": ["reply:T#ok"] for i in range(4)}, "obj4": ["status:500"], "obj5": ["status:502"]})
    server = serve(down)
    try:
        with pytest.raises(JudgeError, match="no reply for 2 of 6"):
            run_judge(path, openai_replies(judge_for(server, retries=1), cache), "judge-x", print_fn=lambda *_: None)
    finally:
        server.shutdown()
    assert not list(tmp_path.glob("*_evaluated_*"))  # nothing half-scored is written
    up = Script({f"obj{i}": ["reply:F#no"] for i in range(6)})
    server = serve(up)
    try:
        out = run_judge(path, openai_replies(judge_for(server), cache), "judge-x", print_fn=lambda *_: None)
    finally:
        server.shutdown()
    assert up.requests == {"obj4": 1, "obj5": 1}  # the four finished items were not asked again
    report = json.loads(out.read_text())
    assert report["invalid"] == 0 and report["accuracy"] == pytest.approx(100 * 4 / 6)


def test_non_retryable_status_fails_fast(tmp_path):
    script = Script({f"obj{i}": ["status:401"] for i in range(6)})
    server = serve(script)
    try:
        with pytest.raises(JudgeError):
            run_judge(
                write_results(tmp_path),
                openai_replies(judge_for(server), tmp_path / "c.jsonl"),
                "j",
                print_fn=lambda *_: None,
            )
    finally:
        server.shutdown()
    assert set(script.requests.values()) == {1}


def test_judge_cli_offline_and_openai_errors(tmp_path, capsys):
    path = write_results(tmp_path, 3)
    assert main(["judge", str(path), "--judge", "openai"]) == 2
    assert "needs --base-url and --model" in capsys.readouterr().err
    script = Script({f"obj{i}": ["reply:T#y"] for i in range(3)})
    server = serve(script)
    try:
        assert (
            main(
                [
                    "judge",
                    str(path),
                    "--judge",
                    "openai",
                    "--base-url",
                    f"http://127.0.0.1:{server.server_address[1]}/v1",
                    "--model",
                    "qwen2-72b-instruct",
                ]
            )
            == 0
        )
    finally:
        server.shutdown()
    assert "accuracy" in capsys.readouterr().out
    assert (tmp_path / f"{path.stem}_evaluated_qwen2-72b-instruct.json").is_file()
    (tmp_path / "broken.json").write_text("{")
    assert main(["judge", str(tmp_path / "broken.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err


def test_offline_judge_on_each_kind(tmp_path):
    closed = tmp_path / "ModelNet_classification_prompt0.json"
    closed.write_text(
        json.dumps(
            {
                "prompt": "What is this?",
                "results": [
                    {"object_id": 0, "ground_truth": 8, "label_name": "chair", "model_output": "a red chair"},
                    {"object_id": 1, "ground_truth": 33, "label_name": "table", "model_output": "a chair"},
                ],
            }
        )
    )
    report = json.loads(run_judge(closed, offline_replies(), "offline", print_fn=lambda *_: None).read_text())
    assert report["clean_accuracy"] == pytest.approx(50.0) and report["invalid"] == 0
    assert report["num_classes"] == 40  # the embedded class list, as the judge drew from it
    open_ = write_results(tmp_path, 2)
    data = json.loads(open_.read_text())
    data["results"][0].update(ground_truth="A red chair with four legs.", model_output="This is a seat.")
    data["results"][1].update(ground_truth="A tall lamp.", model_output="A car.")
    open_.write_text(json.dumps(data))
    report = json.loads(run_judge(open_, offline_replies(), "offline", print_fn=lambda *_: None).read_text())
    assert [r["correct"] for r in report["results"]] == [1, 0]
    cap = tmp_path / "PointLLM_brief_description_val_200_GT_Objaverse_captioning_prompt2.json"
    cap.write_text(
        json.dumps(
            {
                "prompt": "Caption",
                "results": [{"object_id": "a", "ground_truth": "A red chair.", "model_output": "A red chair."}],
            }
        )
    )
    report = json.loads(run_judge(cap, offline_replies(), "offline", print_fn=lambda *_: None).read_text())
    assert report["average_score"] == pytest.approx(100.0, abs=1)
