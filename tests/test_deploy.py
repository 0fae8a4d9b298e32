"""`gpufleet deploy compose|k8s|systemd`: the seeds' setups (docs/examples/) generate files that real validators
accept (compose-spec schema, kubernetes-validate, systemd-analyze verify), match the reviewed golden files, and
run vLLM with exactly the argv `gpufleet plan` prints."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from typer.testing import CliRunner

from gpufleet.cli import app
from gpufleet.deploy import build_fleet, compose_files, k8s_files, ray_worker_units, swap_commands, systemd_files
from gpufleet.deploy.fleet import Fleet, service_name
from gpufleet.deploy.probes import probe_timing
from gpufleet.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "docs" / "examples"
DATA = Path(__file__).parent / "data" / "deploy"
GOLDEN = DATA / "golden"
EXEC = "/opt/gpufleet/bin/gpufleet"  # systemd goldens: the path on a target host
K8S_VERSION = "1.37.0"  # the newest schemas kubernetes-validate 1.37.0 ships
# (example, target) pairs kept as golden files: each seed's own setup.
GOLDEN_CASES = [
    ("seed-000-001-gaming-3090", "compose"),
    ("seed-001-wsl2-offload", "compose"),
    ("seed-002-k3s-3060", "k8s"),
    ("seed-003-two-a100", "systemd"),
    ("seed-004-two-sparks", "systemd"),
    ("seed-004-two-sparks-ray", "systemd"),
]
EXAMPLE_NAMES = sorted(p.stem for p in EXAMPLES.glob("*.yaml"))
# Container targets: every example but the one whose Ray cluster gpufleet runs (systemd only).
CONTAINER_EXAMPLES = [name for name in EXAMPLE_NAMES if name != "seed-004-two-sparks-ray"]


def fleet_of(example: str) -> Fleet:
    return build_fleet(yaml.safe_load((EXAMPLES / f"{example}.yaml").read_text()), file=f"{example}.yaml")


def generate(example: str, target: str, *, executable: str = EXEC) -> dict[str, str]:
    fleet, source = fleet_of(example), f"{example}.yaml"
    if target == "compose":
        return compose_files(fleet, source=source)
    if target == "k8s":
        return k8s_files(fleet, source=source)
    return systemd_files(fleet, executable=executable, source=source)


def yaml_documents(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d is not None]


# --- the seeds' examples -----------------------------------------------------------------------------------------


def test_every_seed_setup_has_an_example_config() -> None:
    assert {
        "seed-000-001-gaming-3090",
        "seed-001-wsl2-offload",
        "seed-002-k3s-3060",
        "seed-003-two-a100",
        "seed-004-two-sparks",
    } <= set(EXAMPLE_NAMES)


@pytest.mark.parametrize(("example", "target"), GOLDEN_CASES)
def test_golden_files_match(example: str, target: str) -> None:
    files = generate(example, target)
    folder = GOLDEN / example / target
    if os.environ.get("GPUFLEET_UPDATE_GOLDEN") == "1":
        shutil.rmtree(folder, ignore_errors=True)
        for name, text in files.items():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            (folder / name).write_text(text)
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}
    assert on_disk == set(files), f"regenerate with GPUFLEET_UPDATE_GOLDEN=1 ({folder})"
    for name, text in files.items():
        assert text == (folder / name).read_text(), f"{example}/{target}/{name} changed; review and regenerate"


# --- real validators ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("example", CONTAINER_EXAMPLES)
def test_compose_files_follow_the_compose_spec_schema(example: str) -> None:
    schema = json.loads((DATA / "compose-spec.json").read_text())
    compose = yaml.safe_load(generate(example, "compose")["compose.yaml"])
    jsonschema.Draft202012Validator(schema).validate(compose)
    # And the schema does catch a mistake of the kind a generator makes.
    broken = {**compose, "services": {"x": {"image": "i", "restart": ["always"]}}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


@pytest.mark.parametrize("example", CONTAINER_EXAMPLES)
def test_k8s_manifests_pass_kubernetes_validate_strict(example: str) -> None:
    kinds = []
    for name, text in generate(example, "k8s").items():
        for document in yaml_documents(text):
            kubernetes_validate.validate(document, K8S_VERSION, strict=True)
            kinds.append((name, document["kind"]))
    assert ("gateway.yaml", "ConfigMap") in kinds and ("00-namespace.yaml", "Namespace") in kinds
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "x"},
                "spec": {"strategy": {"type": "Recreate"}, "replicas": "one"},
            },
            K8S_VERSION,
            strict=True,
        )


def systemd_verify(unit_dir: Path) -> subprocess.CompletedProcess[str]:
    units = sorted(str(p) for p in unit_dir.rglob("*.service"))
    return subprocess.run(
        ["systemd-analyze", "verify", *units], capture_output=True, text=True, check=False, timeout=120
    )


@pytest.mark.parametrize(
    "example", ["seed-003-two-a100", "seed-004-two-sparks", "seed-004-two-sparks-ray", "seed-002-k3s-3060"]
)
def test_systemd_unit_passes_systemd_analyze_verify(example: str, tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists: use this venv's gpufleet.
    executable = str(Path(sys.executable).with_name("gpufleet"))
    for name, text in generate(example, "systemd", executable=executable).items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    done = systemd_verify(tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr  # unknown keys are only warned about
    unit = (tmp_path / "gpufleet.service").read_text()
    for line in (
        "Restart=on-failure",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "EnvironmentFile=/etc/gpufleet/gpufleet.env",
        f"ExecStart={executable} serve --config",
    ):
        assert line in unit


def test_multi_node_model_gets_a_ray_worker_unit_per_worker_joining_the_head() -> None:
    files = generate("seed-004-two-sparks-ray", "systemd")
    assert sorted(name for name in files if name.endswith(".service")) == [
        "192.168.100.11/gpufleet-ray-worker.service",
        "gpufleet.service",
    ]
    worker = files["192.168.100.11/gpufleet-ray-worker.service"]
    assert (
        f"ExecStart={EXEC} node join 192.168.100.10:6379 --node-ip 192.168.100.11"
        " --token-file /etc/gpufleet/ray-token --num-gpus 1 --python /opt/vllm/.venv/bin/python"
    ) in worker
    assert "Restart=on-failure" in worker and "NoNewPrivileges=yes" in worker


def test_systemd_analyze_verify_catches_a_broken_unit(tmp_path: Path) -> None:
    (tmp_path / "x.service").write_text("[Service]\nExecStart=/nonexistent/gpufleet serve\nRestart=sometimes\n")
    done = systemd_verify(tmp_path)
    assert done.returncode != 0 or done.stderr


def test_ray_worker_hook_writes_one_verified_unit_per_worker(tmp_path: Path) -> None:
    executable = str(Path(sys.executable).with_name("gpufleet"))
    units = ray_worker_units("192.168.100.10", ["192.168.100.11", "192.168.100.12"], executable=executable)
    assert sorted(units) == ["192.168.100.11/gpufleet-ray-worker.service", "192.168.100.12/gpufleet-ray-worker.service"]
    for name, text in units.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
        assert f"ExecStart={executable} node join 192.168.100.10" in text
    done = systemd_verify(tmp_path)
    assert done.returncode == 0 and done.stderr == "", done.stderr


# --- the same argv as `gpufleet plan` ------------------------------------------------------------------------------


def plan_argv(*args: str) -> list[str]:
    result = CliRunner().invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == 0, result.output
    argv: list[str] = json.loads(result.stdout)["argv"]
    return ["--model", argv[0], *argv[1:]]  # vllm serve MODEL ... == the image's --model MODEL ...


@pytest.mark.parametrize(
    ("example", "model", "plan_args"),
    [
        (
            "seed-000-001-gaming-3090",
            "qwen3-32b-awq",
            ["qwen3-32b-awq", "--gpu", "rtx3090", "--context", "8192", "--vllm-version", "0.8.5"],
        ),
        (
            "seed-001-wsl2-offload",
            "qwen3-32b-awq",
            [
                "qwen3-32b-awq",
                "--gpu",
                "rtx3090",
                "--context",
                "16384",
                "--util",
                "0.9",
                "--allow-cpu-offload",
                "--wsl2",
                "--vllm-version",
                "0.8.5",
            ],
        ),
        (
            "seed-002-k3s-3060",
            "ml",
            ["Qwen/Qwen3-8B-AWQ", "--gpu", "rtx3060", "--context", "8192", "--util", "0.9", "--vllm-version", "0.8.5"],
        ),
        (
            "seed-003-two-a100",
            "coder",
            [
                "Qwen/Qwen2.5-Coder-32B-Instruct",
                "--gpu",
                "a100-80gb",
                "--tp",
                "2",
                "--context",
                "131072",
                "--vllm-version",
                "0.26.0",
            ],
        ),
        (
            "seed-004-two-sparks",
            "qwen3-235b-awq",
            [
                "QuantTrio/Qwen3-235B-A22B-Instruct-2507-AWQ",
                "--gpu",
                "gb10",
                "--tp",
                "2",
                "--util",
                "0.75",
                "--context",
                "8192",
                "--vllm-version",
                "0.26.0",
            ],
        ),
    ],
)
def test_generated_vllm_argv_equals_gpufleet_plans(example: str, model: str, plan_args: list[str]) -> None:
    planned = plan_argv(*plan_args, "--served-name", model)
    compose = yaml.safe_load(generate(example, "compose")["compose.yaml"])
    command = compose["services"][service_name(model)]["command"]
    assert command == [*planned, "--host", "0.0.0.0", "--port", "8000"]
    k8s = yaml_documents(generate(example, "k8s")[f"{service_name(model)}.yaml"])
    assert k8s[0]["spec"]["template"]["spec"]["containers"][0]["args"] == command


def test_vllm_use_v1_0_only_in_seed_001s_offload_case() -> None:
    for example in EXAMPLE_NAMES:
        for engine in fleet_of(example).engines:
            assert ("VLLM_USE_V1" in engine.env) == (example == "seed-001-wsl2-offload"), example
    offload = fleet_of("seed-001-wsl2-offload").engines[0]
    assert offload.env["VLLM_USE_V1"] == "0" and "--cpu-offload-gb" in offload.args


# --- what the files say -----------------------------------------------------------------------------------------


def test_compose_pins_the_image_requests_gpus_and_puts_the_gateway_in_front() -> None:
    compose = yaml.safe_load(generate("seed-000-001-gaming-3090", "compose")["compose.yaml"])
    engine = compose["services"]["vllm-qwen3-32b-awq"]
    assert engine["image"] == "vllm/vllm-openai:v0.8.5" and engine["ipc"] == "host"
    assert engine["deploy"]["resources"]["reservations"]["devices"][0]["count"] == 1
    assert engine["healthcheck"]["start_period"] == "180s" and engine["restart"] == "unless-stopped"
    assert engine["environment"]["HF_TOKEN"] == "${HF_TOKEN}"  # compose fills it from .env at `up`
    assert "ports" not in engine  # only the gateway is published
    gateway = compose["services"]["gateway"]
    assert gateway["ports"] == ["8000:8000"] and "vllm-qwen3-32b-awq" in gateway["depends_on"]
    # The image no step built before (issue 20 §5): compose builds it from a checkout.
    assert gateway["build"]["dockerfile"] == "deploy/docker/Dockerfile"
    assert (REPO / gateway["build"]["dockerfile"]).is_file() and "GPUFLEET_SRC" in gateway["build"]["context"]


def test_k8s_runtime_class_for_k3s(tmp_path: Path) -> None:
    fleet = fleet_of("seed-002-k3s-3060")
    docs = yaml_documents(k8s_files(fleet, runtime_class="nvidia")["vllm-ml.yaml"])
    assert docs[0]["spec"]["template"]["spec"]["runtimeClassName"] == "nvidia"


def test_gateway_config_reaches_vllm_models_as_remote_upstreams_and_keeps_routing() -> None:
    fleet = fleet_of("seed-000-001-gaming-3090")
    models = fleet.gateway_config["models"]
    assert models["qwen3-32b-awq"] == {
        "engine": "remote",
        "url": "http://vllm-qwen3-32b-awq:8000/v1",
        "upstream_model": "qwen3-32b-awq",
        "timeout_s": 600,
        "aliases": ["Qwen/Qwen3-32B-AWQ"],
        "fallbacks": ["qwen2.5-7b"],
        "defaults": {"thinking": False},
    }
    assert fleet.gateway_config["router"] == {
        "auto": {"routine": "qwen2.5-7b", "moderate": "qwen3-32b-awq", "complex": "qwen3-32b-awq"}
    }
    assert fleet.env_names == ("GPUFLEET_KEY", "HF_TOKEN")


def test_no_secret_of_the_generating_shell_lands_in_a_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    monkeypatch.setenv("GPUFLEET_KEY", "key_secret_value")
    for target in ("compose", "k8s", "systemd"):
        for text in generate("seed-000-001-gaming-3090", target).values():
            assert "secret_value" not in text
    k8s = yaml_documents(generate("seed-000-001-gaming-3090", "k8s")["vllm-qwen3-32b-awq.yaml"])
    env = k8s[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    # optional: a public model starts without HF_TOKEN (issue 20 §5)
    assert {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "gpufleet-env", "key": "HF_TOKEN", "optional": True}},
    } in env


def test_k8s_engine_has_recreate_gpu_limits_shm_cache_and_a_startup_probe_past_the_cold_start() -> None:
    deployment, service = yaml_documents(generate("seed-002-k3s-3060", "k8s")["vllm-ml.yaml"])  # one replica: no PDB
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    assert spec["strategy"] == {"type": "Recreate"} and spec["replicas"] == 1
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"nvidia.com/gpu": "1", "cpu": "2", "memory": "16Gi"}
    assert {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "8Gi"}} in pod["volumes"]
    assert "runtimeClassName" not in pod
    assert {
        "name": "hf-cache",
        "hostPath": {"path": "/var/lib/gpufleet/huggingface", "type": "DirectoryOrCreate"},
    } in pod["volumes"]
    startup = container["startupProbe"]
    # ready_timeout_s 180: seed 002's 120 s first load (download + load) fits in the window, ~20 s from cache.
    assert startup["periodSeconds"] * startup["failureThreshold"] == 180
    assert service["kind"] == "Service"
    r1 = yaml_documents(generate("seed-002-k3s-3060", "k8s")["vllm-r1.yaml"])[0]
    assert r1["spec"]["replicas"] == 0  # the swap group's other member waits at 0


def test_k8s_model_cache_can_be_a_pvc() -> None:
    files = k8s_files(fleet_of("seed-002-k3s-3060"), pvc="vllm-cache")
    pod = yaml_documents(files["vllm-ml.yaml"])[0]["spec"]["template"]["spec"]
    assert {"name": "hf-cache", "persistentVolumeClaim": {"claimName": "vllm-cache"}} in pod["volumes"]


def test_swap_prints_the_kubectl_lines_of_gpu_mode() -> None:
    assert swap_commands(fleet_of("seed-002-k3s-3060"), "r1", namespace="ml") == [
        "kubectl -n ml scale deployment/vllm-ml --replicas=0",
        "kubectl -n ml wait --for=delete pod -l app.kubernetes.io/instance=vllm-ml --timeout=90s",
        "kubectl -n ml scale deployment/vllm-r1 --replicas=1",
        "kubectl -n ml rollout status deployment/vllm-r1 --timeout=270s",
    ]


@pytest.mark.parametrize(
    ("cold_start_s", "threshold", "budget"), [(180, 18, 180), (600, 60, 600), (125, 13, 130), (1, 1, 10)]
)
def test_probe_window_covers_the_cold_start(cold_start_s: float, threshold: int, budget: int) -> None:
    timing = probe_timing(cold_start_s)
    assert (timing.startup_failure_threshold, timing.startup_budget_s) == (threshold, budget)


@pytest.mark.parametrize(
    ("name", "service"),
    [
        ("qwen3-32b-awq", "vllm-qwen3-32b-awq"),
        ("Qwen/Qwen2.5-7B", "vllm-qwen-qwen2-5-7b"),
        ("x" * 80, "vllm-" + "x" * 58),
    ],
)
def test_service_names_are_dns_labels(name: str, service: str) -> None:
    assert service_name(name) == service


# --- the CLI --------------------------------------------------------------------------------------------------------


def test_cli_writes_the_files_and_prints_their_paths(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["deploy", "k8s", "--config", str(EXAMPLES / "seed-002-k3s-3060.yaml"), "-o", str(tmp_path), "-n", "ml"]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "00-namespace.yaml",
        "gateway.yaml",
        "vllm-ml.yaml",
        "vllm-r1.yaml",
    ]
    assert str(tmp_path / "vllm-ml.yaml") in result.stdout


def write_config(tmp_path: Path, models: dict[str, Any]) -> str:
    path = tmp_path / "gpufleet.yaml"
    path.write_text(yaml.safe_dump({"models": models}))
    return str(path)


QWEN8B = {
    "engine": "vllm",
    "model": "Qwen/Qwen3-8B-AWQ",
    "launch": "docker",
    "docker": {"image": "vllm/vllm-openai:v0.26.0"},
}


@pytest.mark.parametrize(
    ("args", "models", "message"),
    [
        (["k8s", "--swap", "nope"], {"m": QWEN8B}, "no vLLM model named 'nope' in this config (vLLM models: m)"),
        (["k8s", "--swap", "m"], {"m": QWEN8B}, "model 'm' is in no swap group"),
        (["compose", "--swap", "m"], {"m": QWEN8B}, "--swap is for k8s"),
        (["compose"], {"m": QWEN8B}, "say where to write the files: -o DIR"),
        (
            ["compose", "-o", "OUT"],
            {"m": {**QWEN8B, "extra_args": ["--swap-space", "16"]}},
            "gpufleet.yaml: models.m: vLLM 0.26.0 (vllm/vllm-openai:v0.26.0)"
            " would refuse this command line: --swap-space",
        ),
        (
            ["compose", "-o", "OUT"],
            {"m": {"engine": "vllm", "model": "x", "device": "cpu"}},
            "models.m.device: device: cpu cannot be deployed as a vllm/vllm-openai container",
        ),
        (
            ["k8s", "-o", "OUT"],
            {"m": {**QWEN8B, "plan": True, "gpu": "rtx3060", "max_model_len": 262144}},
            "models.m: the plan for Qwen/Qwen3-8B-AWQ on rtx3060 does not fit",
        ),
        (["systemd", "-o", "OUT"], {"m": {**QWEN8B, "contxt": 1}}, "models.m.contxt: unknown key"),
    ],
)
def test_bad_config_or_unknown_model_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], models: dict[str, Any], message: str
) -> None:
    config = write_config(tmp_path, models)
    args = [str(tmp_path / "out") if a == "OUT" else a for a in args]
    result = CliRunner().invoke(app, ["deploy", *args, "--config", config])
    assert result.exit_code == 2, result.output
    assert message in result.stderr and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_missing_config_file_is_exit_2(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["deploy", "compose", "--config", str(tmp_path / "no.yaml"), "-o", "x"])
    assert result.exit_code == 2 and "no.yaml: file not found" in result.stderr


@pytest.mark.processes
def test_every_command_in_docs_deploy_md_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    text = (REPO / "docs" / "deploy.md").read_text()
    commands = re.findall(r"^gpufleet (deploy .*)$", text, re.M)
    assert len(commands) >= 6
    for command in commands:
        args = [str(tmp_path / a) if a.startswith("out/") else a for a in shlex.split(command)]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, (command, result.output)


@pytest.mark.parametrize("target", ["compose", "k8s"])
def test_multi_node_model_in_a_container_target_is_refused_naming_the_key(target: str) -> None:
    with pytest.raises(ConfigError) as caught:
        generate("seed-004-two-sparks-ray", target)
    assert "models.qwen3-235b-awq.nodes" in str(caught.value) and "gpufleet deploy systemd" in str(caught.value)


def test_generated_gateway_accepts_its_service_names_as_host() -> None:
    """The gateway refuses unknown Host names (DNS-rebinding guard); in-cluster clients use the service names."""
    fleet = fleet_of("seed-000-001-gaming-3090")
    compose_gateway = yaml.safe_load(compose_files(fleet)["gateway.yaml"])
    assert "gateway" in compose_gateway["server"]["allowed_hosts"]
    k8s_docs = yaml_documents(k8s_files(fleet, namespace="llm")["gateway.yaml"])
    config_map = next(d for d in k8s_docs if d["kind"] == "ConfigMap")
    hosts = yaml.safe_load(config_map["data"]["gpufleet.yaml"])["server"]["allowed_hosts"]
    assert {"gpufleet-gateway", "gpufleet-gateway.llm.svc", "gpufleet-gateway.llm.svc.cluster.local"} <= set(hosts)


def test_ray_worker_unit_keeps_python_with_a_ray_block_and_the_nccl_interface() -> None:
    """Issue 20 §5: a `ray:` block without its own python dropped --python; NCCL/GLOO settings never reached
    the worker."""
    raw = yaml.safe_load((EXAMPLES / "seed-004-two-sparks-ray.yaml").read_text())
    model = next(iter(raw["models"].values()))
    model["ray"] = {"num_cpus": 4}
    model["env"] = {"NCCL_SOCKET_IFNAME": "enp1s0f0np0", "GLOO_SOCKET_IFNAME": "enp1s0f0np0", "OTHER": "x"}
    files = systemd_files(build_fleet(raw, file="inline.yaml"), executable=EXEC)
    worker = files["192.168.100.11/gpufleet-ray-worker.service"]
    assert "--python /opt/vllm/.venv/bin/python" in worker
    for name in ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"):
        assert f"Environment={name}=enp1s0f0np0" in worker
    assert "OTHER" not in worker


SECURITY_SCORE_MAX = 4.0  # systemd-analyze security's exposure (0 best, 10 worst); the generated units score 3.2


@pytest.mark.parametrize("example", ["seed-003-two-a100", "seed-004-two-sparks-ray"])
def test_systemd_units_are_sandboxed_yet_writable_where_engines_write(example: str, tmp_path: Path) -> None:
    """Issue 20 §5: HOME and the XDG cache in the state directory (vLLM, Ray, Triton write there), memlock
    unlimited (pinned memory), and systemd-analyze security's exposure at most SECURITY_SCORE_MAX."""
    files = generate(example, "systemd", executable="/opt/gpufleet/bin/gpufleet")
    for name, text in files.items():
        if not name.endswith(".service"):
            continue
        assert "Environment=HOME=/var/lib/gpufleet" in text and "LimitMEMLOCK=infinity" in text
        assert "ProtectHome=yes" in text and "CapabilityBoundingSet=\n" in text
        path = tmp_path / name.replace("/", "_")
        path.write_text(text)
        done = subprocess.run(
            ["systemd-analyze", "security", "--offline=true", str(path)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        score = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
        assert score is not None, done.stdout + done.stderr
        assert float(score.group(1)) <= SECURITY_SCORE_MAX, done.stdout[-2000:]


def test_exec_in_a_home_directory_stays_visible_to_the_unit() -> None:
    """ProtectHome=yes hid a default --exec under /home or /root (status 203/EXEC): read-only there."""
    files = generate("seed-003-two-a100", "systemd", executable="/home/ops/.venv/bin/gpufleet")
    assert "ProtectHome=read-only" in files["gpufleet.service"]
