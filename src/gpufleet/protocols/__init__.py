"""Protocol adapters: Anthropic Messages and OpenAI Responses to and from the one internal chat form.

Pure functions and small stateful encoders, no I/O: the gateway's routes call them at the edge.

    translated = messages_to_chat(body)          # Anthropic request -> chat payload (+ dropped tool names)
    answer = chat_to_message(chat_json, model)   # chat.completion -> Anthropic message
    enc = MessagesStreamEncoder(model); enc.chunk(c) / enc.done() / enc.error(err_body)  # SSE bytes
and the same for Responses (`responses_to_chat`, `chat_to_response`, `ResponsesStreamEncoder`).
"""

from __future__ import annotations

from gpufleet.protocols.chat_form import Translated
from gpufleet.protocols.messages_answer import chat_to_message, messages_error_body, messages_error_status
from gpufleet.protocols.messages_request import messages_to_chat
from gpufleet.protocols.messages_stream import MessagesStreamEncoder
from gpufleet.protocols.responses_answer import chat_to_response
from gpufleet.protocols.responses_request import responses_to_chat
from gpufleet.protocols.responses_stream import ResponsesStreamEncoder

__all__ = [
    "MessagesStreamEncoder",
    "ResponsesStreamEncoder",
    "Translated",
    "chat_to_message",
    "chat_to_response",
    "messages_error_body",
    "messages_error_status",
    "messages_to_chat",
    "responses_to_chat",
]
