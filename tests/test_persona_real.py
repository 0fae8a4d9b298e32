"""Personas through the real embedded Qwen2.5-Coder-1.5B-Instruct: `POST /chat` (seed 003) and by name.

The persona's system prompt must really steer the model, so the persona asks for something the model would
not do unprompted (answer as a pirate who ends every reply with a fixed signature).
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import openai
import pytest

from tests.served_gateway import ServedGateway, start_gateway, stop_gateway

pytestmark = [pytest.mark.qwen, pytest.mark.slow]

SIGNATURE = "ARRR-42"
PIRATE = (
    f"You are Captain Byte, a pirate. Answer in one short sentence and always end your answer with "
    f"the exact signature {SIGNATURE}."
)


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedGateway]:
    config = {
        "models": {
            "qwen": {
                "engine": "llamacpp",
                "source": "package:qwen2.5-coder-1.5b-instruct",
                "context": 4096,
                "parallel": 1,
                "threads": 2,
                "preload": True,
            }
        },
        "personas": {
            "captain": {
                "route": "qwen",
                "system_prompt": PIRATE,
                "defaults": {"temperature": 0.0, "seed": 7, "max_tokens": 60},
            }
        },
    }
    gateway = start_gateway(config, tmp_path_factory.mktemp("persona"), ready_timeout_s=300)
    yield gateway
    stop_gateway(gateway)


def test_chat_endpoint_answers_in_persona(qwen: ServedGateway) -> None:
    response = httpx.post(f"{qwen.url}/chat", json={"message": "What is the capital of France?"}, timeout=300)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["persona"] == "captain" and body["model"] == "qwen"
    assert "paris" in body["reply"].lower()
    assert SIGNATURE in body["reply"]  # the persona's instruction reached the model and steered it
    assert body["usage"]["completion_tokens"] > 0


def test_chat_endpoint_uses_the_history(qwen: ServedGateway) -> None:
    history = [
        {"role": "user", "content": "My parrot is called Pixel."},
        {"role": "assistant", "content": f"A fine name for a parrot, matey! {SIGNATURE}"},
    ]
    response = httpx.post(
        f"{qwen.url}/chat", json={"message": "What is my parrot called?", "history": history}, timeout=300
    )
    assert response.status_code == 200, response.text
    assert "pixel" in response.json()["reply"].lower()


def test_persona_by_name_on_the_openai_endpoint_streams(qwen: ServedGateway) -> None:
    client = openai.OpenAI(base_url=f"{qwen.url}/v1", api_key="x", max_retries=0, timeout=300)
    stream = client.chat.completions.create(
        model="captain", messages=[{"role": "user", "content": "Name a colour."}], stream=True
    )
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert SIGNATURE in text
