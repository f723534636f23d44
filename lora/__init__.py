"""lora: fine-tuning a pretrained model, in full and with parameter-efficient methods (Weeks 5.1, 5.2).

Teaches what changes when a pretrained model is adapted instead of trained: the data (prompt targets
masked), the memory (weights, gradients and two AdamW moments per parameter, sharded over ranks when
they no longer fit), and how few parameters an adaptation needs. Every method is checked against peft
(and NF4 against bitsandbytes) on SmolLM2-135M-Instruct. Reading order:

- the data: ``examples.py`` ((prompt, completion) pairs -> ids with masked targets) -> ``chat_data.py``
  (instruction datasets as chat conversations: checked, deduplicated, length-filtered, split, mixed) ->
  ``chat_mask.py`` (a conversation in the model's chat template, the loss on assistant turns only) ->
  ``packing.py`` (several conversations per row, block-diagonal mask, positions restarting per conversation);
- the loop: ``finetune.py``
  (``lora.finetune.finetune``, one loop for every method, and the script ``python -m lora.finetune``,
  so this file does not import it) -> ``evaluation.py`` (masked val loss, GSM8K exact match,
  forgetting) -> ``memory.py`` (full fine-tuning's bytes, computed and measured) -> ``sharded.py``
  (FSDP2 under torchrun, sharded checkpoints);
- low-rank adapters: ``lora_linear.py`` (``LoRALinear``) -> ``dora.py`` (magnitude and direction) ->
  ``inject.py`` (by module name, merge / unmerge) -> ``adapter_io.py`` (peft's file format) ->
  ``qlora.py`` (LoRA on an NF4 base, ``quant/nf4.py``);
- the other families: ``bottleneck.py`` (Houlsby adapters) -> ``prompt_tuning.py`` (soft prompts) ->
  ``prefix_tuning.py`` (per-layer key/value prefixes through gpt's KVCache protocol);
- ``bench.py``: ``python -m lora.bench``, every method at the same steps and data, side by side.

References: Hu et al. 2021 (LoRA); Kalajdzievski 2023 (rsLoRA); Liu et al. 2024 (DoRA); Dettmers et al.
2023 (QLoRA); Houlsby et al. 2019 (adapters); Lester et al. 2021 (prompt tuning); Li and Liang 2021
(prefix tuning); Rajbhandari et al. 2020 (ZeRO) and PyTorch FSDP2; peft and bitsandbytes, the
references the tests compare with.
"""

from lora.adapter_io import load_adapter, save_adapter
from lora.bottleneck import inject_adapters
from lora.chat_data import (
    MIXTURE,
    SOURCES,
    ChatData,
    ChatDataConfig,
    ChatDataReport,
    build_chat_data,
    clean_conversations,
    mix_conversations,
)
from lora.chat_mask import MaskedChat, conversation_examples, masked_example, render_masked
from lora.dora import DoRALinear
from lora.examples import Example, chat_examples, make_example
from lora.inject import inject_lora, lora_state_dict, merge_lora, trainable_parameters, unmerge_lora
from lora.lora_linear import LoRALinear
from lora.packing import (
    PackedBatch,
    PaddingCounts,
    first_fit,
    pack,
    packed_loss,
    packed_token_losses,
    padding_counts,
)
from lora.prefix_tuning import PrefixCache, PrefixTuning, prefix_tune
from lora.prompt_tuning import PromptTuning, prompt_tune
from lora.qlora import prepare_qlora, qlora_bytes

__all__ = [
    "MIXTURE",
    "SOURCES",
    "ChatData",
    "ChatDataConfig",
    "ChatDataReport",
    "DoRALinear",
    "Example",
    "LoRALinear",
    "MaskedChat",
    "PackedBatch",
    "PaddingCounts",
    "PrefixCache",
    "PrefixTuning",
    "PromptTuning",
    "build_chat_data",
    "chat_examples",
    "clean_conversations",
    "conversation_examples",
    "first_fit",
    "inject_adapters",
    "inject_lora",
    "load_adapter",
    "lora_state_dict",
    "make_example",
    "masked_example",
    "merge_lora",
    "mix_conversations",
    "pack",
    "packed_loss",
    "packed_token_losses",
    "padding_counts",
    "prefix_tune",
    "prepare_qlora",
    "prompt_tune",
    "qlora_bytes",
    "render_masked",
    "save_adapter",
    "trainable_parameters",
    "unmerge_lora",
]
