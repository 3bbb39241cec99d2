"""`tina tui`: a Textual app to configure, launch, watch and stop a training run.

What it does: a form prefilled from `train_config.yaml` (model root/base/adapter, data, steps,
save and eval intervals, taps, per-layer heads, aggregator, mode, output dir), checked as you type
(`tina.tui_state.validate_form`: each field's own check, then the whole config through
`tina.train.config.load_train_config`); Run writes the config into the run's directory
(`<output_dir>/train_config.yaml`) and starts the same `tina train` as a subprocess, its output
going to `<output_dir>/train.log`; a status panel, a loss sparkline and the log's last lines follow
the run's `metrics.jsonl` and log as they grow; Stop sends SIGTERM, so the trainer ends after its
current step with a final checkpoint (killed if it has not exited after `stop_timeout_s`).

What it does not do: train in its own process, resume a run, or read TensorBoard files. The
arithmetic behind the panels lives in `tina.tui_state`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import (
    Button,
    Footer,
    Input,
    Label,
    Log,
    OptionList,
    Select,
    Sparkline,
    Static,
    Switch,
)

from tina.train.checkpoints import latest_checkpoint
from tina.tui_state import (
    AGGREGATORS,
    FIELDS,
    GENERAL,
    GENERATED_PER_TASK,
    LABELS,
    TRAIN_MODES,
    LineTail,
    config_from_form,
    eta_seconds,
    form_from_config,
    generate_data,
    mode_choices,
    read_metrics,
    status_lines,
    validate_form,
)

_MODE_LABELS = {"supervised": "supervised", "self_play": "self-play", "hybrid": "hybrid"}
_PLACEHOLDERS = {
    "models_root": "(embedded model)",
    "base": "HF model dir",
    "adapter": "PEFT adapter (optional)",
    "subfolder": "e.g. checkpoint-2000",
    "train_data": "contract JSONL",
    "taps": "0.5, 1.0 or layer indices",
}


class Run:
    """One `tina train` subprocess and the files the TUI follows."""

    def __init__(self, run_dir: Path, config: dict[str, Any]) -> None:
        self.run_dir = run_dir
        self.total_steps = int(config["steps"])
        self.config_path = run_dir / "train_config.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.metrics = LineTail(run_dir / "metrics.jsonl", from_end=True)  # this run's lines only
        self.log_path = run_dir / "train.log"
        command = [
            sys.executable,
            "-m",
            "tina",
            "train",
            "--train-config",
            str(self.config_path),
            "--no-progress",
        ]
        with self.log_path.open("wb") as log:
            log.write(f"$ tina train --train-config {self.config_path}\n".encode())
            log.flush()  # the trainer's output follows this line
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.log = LineTail(self.log_path)
        self.observations: list[tuple[float, int]] = []  # (time seen, step): the ETA's rate
        self.losses: list[float] = []
        self.last: dict[str, Any] | None = None
        self.stop_deadline: float | None = None

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float) -> None:
        """Ask the trainer to stop after its current step (SIGTERM); kill it after timeout_s."""
        if self.running and self.stop_deadline is None:
            self.process.send_signal(signal.SIGTERM)
            self.stop_deadline = time.monotonic() + timeout_s

    def stop_and_wait(self, timeout_s: float) -> None:
        """Stop and wait for the exit (killing it after timeout_s): for when the app closes."""
        self.stop(timeout_s)
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def poll(self) -> tuple[list[str], list[dict[str, Any]]]:
        """New log lines and metrics records; kills the process once a stop has timed out."""
        if (
            self.stop_deadline is not None
            and self.running
            and time.monotonic() > self.stop_deadline
        ):
            self.process.kill()
        records = read_metrics(self.metrics)
        for record in records:
            self.observations.append((time.monotonic(), record["step"]))
            if isinstance(record.get("total"), (int, float)):
                self.losses.append(float(record["total"]))
            self.last = record
        return self.log.read(), records


class TrainingApp(App[None]):
    """Configure, launch, watch and stop a `tina train` run."""

    TITLE = "tina train"
    CSS = """
    #main { height: 1fr; }
    #left { width: 38; border: round $primary; border-title-align: left; }
    #form { height: 1fr; }
    .row { height: 1; }
    .row Label { width: 11; color: $text-muted; }
    .row Input, .row Select { width: 1fr; }
    .row Switch { height: 1; border: none; padding: 0; width: auto; }
    .error { color: $error; display: none; padding-left: 11; }
    .error.shown { display: block; }
    .note { color: $text-muted; padding-left: 11; }
    #error-config { padding-left: 0; }
    #buttons { height: 1; align-horizontal: center; }
    #buttons Button { margin: 0 1; }
    #right { width: 1fr; }
    #status { height: auto; min-height: 5; max-height: 14; border: round $secondary; padding: 0 1; }
    #loss { height: 3; border: round $secondary; }
    #log {
        height: 1fr; min-height: 4; border: round $secondary;
        overflow-x: hidden; scrollbar-size-vertical: 1;
    }
    """
    BINDINGS = [  # noqa: RUF012 (Textual's declared class attribute)
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("ctrl+t", "stop", "Stop", priority=True),
        Binding("ctrl+q", "quit", "Quit", priority=True),
    ]

    def __init__(
        self,
        config_path: str | Path = "train_config.yaml",
        poll_s: float = 0.5,
        stop_timeout_s: float = 60.0,
    ) -> None:
        super().__init__()
        self.config_path = Path(config_path)
        self.poll_s = poll_s
        self.stop_timeout_s = stop_timeout_s
        self.base: dict[str, Any] = {}
        self.load_problem = ""
        try:
            loaded = yaml.safe_load(self.config_path.read_text()) or {}
            if isinstance(loaded, dict):
                self.base = loaded
            else:
                self.load_problem = (
                    f"{self.config_path}: expected a mapping; starting from defaults"
                )
        except FileNotFoundError:
            self.load_problem = f"{self.config_path}: not found; starting from defaults"
        except yaml.YAMLError as exc:
            self.load_problem = f"{self.config_path}: invalid YAML ({exc}); starting from defaults"
        self.current: Run | None = None
        self.problems: dict[str, str] = {}

    # --- layout ---------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        values = form_from_config(self.base)
        with Horizontal(id="main"):
            with Vertical(id="left"):
                with VerticalScroll(id="form"):
                    for name in FIELDS:
                        with Horizontal(classes="row"):
                            yield Label(LABELS[name])
                            yield self._field_widget(name, values[name])
                        yield Static("", id=f"error-{name}", classes="error")
                        if name == "mode" and len(mode_choices()) == 1:
                            yield Static(
                                "self-play and hybrid need the self-play trainer",
                                classes="note",
                            )
                    yield Static("", id=f"error-{GENERAL}", classes="error")
                with Horizontal(id="buttons"):
                    yield Button("Run", id="run", variant="success", compact=True)
                    yield Button("Generate data", id="generate", compact=True, disabled=True)
                    yield Button("Stop", id="stop", variant="error", compact=True, disabled=True)
            with Vertical(id="right"):
                yield Static(self.load_problem or "Fill the form, then Run.", id="status")
                yield Sparkline([], id="loss")
                yield Log(id="log", max_lines=500)
        yield Footer()

    def _field_widget(self, name: str, value: Any) -> Input | Switch | Select[str]:
        wid = f"field-{name}"
        if name == "per_layer":
            return Switch(bool(value), id=wid, animate=False)
        if name == "aggregator":
            return Select(
                [(a, a) for a in AGGREGATORS],
                value=value,
                allow_blank=False,
                compact=True,
                id=wid,
            )
        if name == "mode":
            options = [(_MODE_LABELS[m], m) for m in TRAIN_MODES]
            return Select(
                options,
                value=value if value in TRAIN_MODES else TRAIN_MODES[0],
                allow_blank=False,
                compact=True,
                id=wid,
            )
        return Input(str(value), placeholder=_PLACEHOLDERS.get(name, ""), compact=True, id=wid)

    def on_mount(self) -> None:
        self.query_one("#left").border_title = "tina train: run config"
        self.query_one("#status").border_title = "status"
        self.query_one("#loss").border_title = "loss"
        self.query_one("#log").border_title = "log"
        allowed = mode_choices()
        overlay = self.query_one("#field-mode", Select).query_one(OptionList)  # its drop-down
        for index, mode in enumerate(TRAIN_MODES):
            if mode not in allowed:
                overlay.disable_option_at_index(index)
        self._sync_aggregator()
        self.refresh_problems()
        self.set_interval(self.poll_s, self.poll_run)

    # --- the form ---------------------------------------------------------------------------

    def form_values(self) -> dict[str, Any]:
        """The form's current values, keyed like `tina.tui_state.FIELDS`."""
        values: dict[str, Any] = {}
        for name in FIELDS:
            widget = self.query_one(f"#field-{name}")
            if isinstance(widget, Select):
                values[name] = str(widget.value)
            else:
                assert isinstance(widget, (Input, Switch))
                values[name] = widget.value
        return values

    def refresh_problems(self) -> dict[str, str]:
        """Check the whole form and show each problem under its field."""
        form = self.form_values()
        self.problems = validate_form(self.base, form)
        data = form["train_data"].strip()
        self.query_one("#generate", Button).disabled = not data or Path(data).exists()
        for name in (*FIELDS, GENERAL):
            error = self.query_one(f"#error-{name}", Static)
            message = self.problems.get(name, "")
            error.update(message)
            error.set_class(bool(message), "shown")
        return self.problems

    def _sync_aggregator(self) -> None:
        # one trunk over the concatenated taps has nothing to aggregate
        per_layer = self.query_one("#field-per_layer", Switch).value
        self.query_one("#field-aggregator", Select).disabled = not per_layer

    def on_input_changed(self, event: Input.Changed) -> None:
        self.refresh_problems()

    def on_switch_changed(self, event: Switch.Changed) -> None:
        self._sync_aggregator()
        self.refresh_problems()

    def on_select_changed(self, event: Select.Changed) -> None:
        self.refresh_problems()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "run":
            self.action_run()
        elif event.button.id == "stop":
            self.action_stop()
        elif event.button.id == "generate":
            self.action_generate()

    def action_generate(self) -> None:
        """Write task-suite records where the data field points and no file is."""
        path = Path(self.form_values()["train_data"].strip())
        if path.exists():
            return
        try:
            count = generate_data(path)
        except (OSError, ValueError) as exc:
            self.notify(f"cannot write {path}: {exc}", severity="error")
            return
        self.query_one("#log", Log).write_line(
            f"wrote {count} task-suite records to {path} (tina data --task all "
            f"--n {GENERATED_PER_TASK} --out {path})"
        )
        self.refresh_problems()

    # --- the run ----------------------------------------------------------------------------

    def _status(self, lines: list[str]) -> None:
        self.query_one("#status", Static).update("\n".join(lines))

    def action_run(self) -> None:
        """Check the form; if it is clean, start `tina train` on it."""
        if self.current is not None and self.current.running:
            self.notify("a run is already going: stop it first", severity="warning")
            return
        if self.refresh_problems():
            self._status(["Not started: fix the fields marked in red."])
            return
        config = config_from_form(self.base, self.form_values())
        run_dir = Path(config["output_dir"])
        run_dir.mkdir(parents=True, exist_ok=True)
        self.current = Run(run_dir, config)
        self.query_one("#log", Log).clear()
        self.query_one("#loss", Sparkline).data = []
        self._status([f"started: {run_dir}", "waiting for the first metrics line…"])
        self.query_one("#run", Button).disabled = True
        self.query_one("#stop", Button).disabled = False

    def action_stop(self) -> None:
        """Stop the run after its current step; the trainer writes a final checkpoint."""
        if self.current is None or not self.current.running:
            return
        self.current.stop(self.stop_timeout_s)
        self.query_one("#stop", Button).disabled = True
        self.notify("stopping: the trainer ends its step and writes a checkpoint")

    def poll_run(self) -> None:
        """Follow the run's log and metrics; when it has exited, say how and where it ended."""
        run = self.current
        if run is None:
            return
        exited = not run.running  # read before the files, so nothing written before exit is lost
        lines, records = run.poll()
        if lines:
            self.query_one("#log", Log).write_lines(lines)
        if records:
            self.query_one("#loss", Sparkline).data = list(run.losses)
        if exited:
            self.current = None
            self._finished(run)
        elif records:
            eta = eta_seconds(run.observations, run.total_steps)
            status = status_lines(run.last, run.total_steps, eta)
            if run.stop_deadline is not None:
                status.append("stopping…")
            self._status(status)

    def _finished(self, run: Run) -> None:
        code = run.process.returncode
        checkpoint = latest_checkpoint(run.run_dir)
        stopped = run.last.get("stopped") if run.last else None
        how = f"stopped ({stopped})" if stopped else f"exited with code {code}"
        if code == 0 and not stopped:
            how = "finished"
        status = status_lines(run.last, run.total_steps, None, finished=True) if run.last else []
        status += [how, f"checkpoint: {checkpoint}" if checkpoint else "no checkpoint written"]
        self._status(status)
        self.query_one("#run", Button).disabled = False
        self.query_one("#stop", Button).disabled = True

    async def action_quit(self) -> None:
        if self.current is not None and self.current.running:
            self.current.stop_and_wait(self.stop_timeout_s)
        self.exit()

    def on_unmount(self) -> None:
        if self.current is not None and self.current.running:
            self.current.stop_and_wait(self.stop_timeout_s)


def run_tui(config_path: str | Path = "train_config.yaml") -> int:
    """Open the training TUI on `config_path`; returns an exit code."""
    TrainingApp(config_path).run()
    return 0
