"""``pointalign demo``: a Gradio page to look at a point cloud in 3D and chat about it.

Upload a ``.npy .ply .obj .stl .off .glb`` file (at most ``max_upload_mb``) or pick an example object of the embedded
dataset; the cloud is shown as an interactive plotly scatter and the chat keeps its turns. A file that cannot be
read gets a message in the page. The server binds to 127.0.0.1 unless told otherwise. Gradio and plotly are imported
here only (the ``demo`` extra).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from pointalign.config import GenerationConfig
from pointalign.data.readers import MESH_SUFFIXES, PointLLMFolder
from pointalign.errors import DataError
from pointalign.pipeline import PointAlignPipeline

UPLOAD_TYPES = sorted({".npy", *MESH_SUFFIXES})
VIEW_POINTS = 4096  # points drawn in the 3D view


def cloud_figure(cloud: np.ndarray, title: str):
    """A plotly 3D scatter of an (N, 6) cloud in its own colours (grey when it has none), y up."""
    import plotly.graph_objects as go

    step = max(1, len(cloud) // VIEW_POINTS)
    c = cloud[::step]
    rgb = np.clip(c[:, 3:6], 0, 1)
    colours = [f"rgb({int(r * 255)},{int(g * 255)},{int(b * 255)})" for r, g, b in rgb] if rgb.max() > 0 else "grey"
    fig = go.Figure(go.Scatter3d(x=c[:, 0], y=c[:, 2], z=c[:, 1], mode="markers", marker={"size": 2, "color": colours}))
    fig.update_layout(
        title=title,
        margin={"l": 0, "r": 0, "t": 30, "b": 0},
        height=420,
        scene={
            "aspectmode": "data",
            "xaxis": {"visible": False},
            "yaxis": {"visible": False},
            "zaxis": {"visible": False},
        },
    )
    return fig


def example_objects(root: Path | None, per_class: int = 1) -> dict[str, str]:
    """Label -> object id for a few objects of the embedded dataset's val split (empty without a dataset)."""
    if root is None or not (root / "anno_data" / "synth_object_facts.json").is_file():
        return {}
    facts = json.loads((root / "anno_data" / "synth_object_facts.json").read_text())
    out: dict[str, str] = {}
    seen: dict[str, int] = {}
    for oid, f in sorted(facts.items(), key=lambda kv: (kv[1]["class"], kv[0])):
        if f["split"] == "val" and seen.get(f["class"], 0) < per_class:
            seen[f["class"]] = seen.get(f["class"], 0) + 1
            out[f"{f['class']} ({oid[:8]})"] = oid
    return out


def build_app(
    pipe: PointAlignPipeline, data_root: Path | None = None, max_upload_mb: int = 50, file_points: int = 8192
):
    import gradio as gr

    examples = example_objects(data_root)
    folder = PointLLMFolder(data_root, file_points) if examples else None

    def show(cloud, name: str):
        fig = cloud_figure(cloud.numpy(), name)
        return cloud.numpy(), fig, f"Loaded **{name}** ({len(cloud)} points). Ask away.", []

    def on_upload(file):
        if file is None:
            return None, None, "No file.", []
        path = Path(file if isinstance(file, str) else file.name)
        try:
            if path.stat().st_size > max_upload_mb * 1024 * 1024:
                raise DataError(f"{path.name}: larger than {max_upload_mb} MB")
            cloud = pipe.prepare(path)
        except DataError as exc:
            return None, None, f"**Could not use this file.** {str(exc).replace(str(path.parent) + '/', '')}", []
        return show(cloud, path.name)

    def on_example(label):
        if not label or label not in examples:  # only the listed ids: nothing else reaches the file system
            return None, None, "Pick an example.", []
        return show(pipe.prepare(folder.cloud(examples[label])), label)

    def on_ask(question, history, cloud, max_new_tokens, beams, sample, temperature, top_p):
        question = (question or "").strip()
        if cloud is None:
            return history, question, "Upload a file or pick an example first."
        if not question:
            return history, question, "Type a question."
        turns, pending = [], None
        for msg in history or []:
            if msg["role"] == "user":
                pending = msg["content"]
            elif pending is not None:
                turns.append((pending, msg["content"]))
                pending = None
        gen = GenerationConfig(
            max_new_tokens=int(max_new_tokens),
            num_beams=int(beams),
            do_sample=bool(sample),
            temperature=float(temperature),
            top_p=float(top_p),
        )
        answer = pipe(np.asarray(cloud, dtype=np.float32), question, history=turns, generation=gen)
        history = [*(history or []), {"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return history, "", ""

    with gr.Blocks(title="pointalign") as app:
        gr.Markdown("# Chat with a point cloud\nUpload a cloud or mesh, or pick an example, then ask about it.")
        cloud_state = gr.State(None)
        with gr.Row():
            with gr.Column(scale=1):
                upload = gr.File(
                    label=f"Cloud or mesh ({', '.join(UPLOAD_TYPES)}; up to {max_upload_mb} MB)",
                    file_types=UPLOAD_TYPES,
                    elem_id="upload",
                )
                example = gr.Dropdown(
                    choices=list(examples),
                    value=None,
                    label="... or an example object",
                    elem_id="example",
                    visible=bool(examples),
                )
                status = gr.Markdown("Upload a file or pick an example.", elem_id="status")
                view = gr.Plot(label="3D view", elem_id="view")
            with gr.Column(scale=1):
                chatbot = gr.Chatbot(label="Chat", elem_id="chatbot", height=420)
                question = gr.Textbox(label="Question", placeholder="What is this?", elem_id="question")
                with gr.Row():
                    ask = gr.Button("Ask", variant="primary", elem_id="ask")
                    clear = gr.Button("Clear chat", elem_id="clear")
                with gr.Accordion("Generation settings", open=False):
                    max_new = gr.Slider(8, 256, value=64, step=1, label="Max new tokens")
                    beams = gr.Slider(1, 4, value=1, step=1, label="Beams")
                    sample = gr.Checkbox(value=False, label="Sample")
                    temperature = gr.Slider(0.1, 2.0, value=0.2, label="Temperature")
                    top_p = gr.Slider(0.1, 1.0, value=0.7, label="Top-p")
        upload.upload(on_upload, [upload], [cloud_state, view, status, chatbot])
        example.change(on_example, [example], [cloud_state, view, status, chatbot])
        inputs = [question, chatbot, cloud_state, max_new, beams, sample, temperature, top_p]
        ask.click(on_ask, inputs, [chatbot, question, status])
        question.submit(on_ask, inputs, [chatbot, question, status])
        clear.click(lambda: [], None, [chatbot])
    return app


def launch(
    checkpoint: str | Path,
    host: str = "127.0.0.1",
    port: int | None = None,
    data_root: Path | None = None,
    max_upload_mb: int = 50,
    block: bool = True,
):
    """Build and start the app; with ``block=False`` it returns the running app (tests)."""
    pipe = PointAlignPipeline.from_pretrained(checkpoint)
    app = build_app(pipe, data_root, max_upload_mb, file_points=_file_points(data_root))
    app.queue()
    app.launch(
        server_name=host,
        server_port=port,
        max_file_size=f"{max_upload_mb}mb",
        prevent_thread_lock=not block,
        show_error=True,
        inbrowser=False,
    )
    return app


def _file_points(root: Path | None) -> int:
    if root is not None and (root / "dataset_card.json").is_file():
        return int(json.loads((root / "dataset_card.json").read_text()).get("points", 8192))
    return 8192
