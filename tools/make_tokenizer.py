"""Derive CLIP's tokenizer files (``vocab.json`` + ``merges.txt``) from CLIP's BPE merge list.

Stable Diffusion 1.5 uses OpenAI CLIP's tokenizer. Its merge list ships inside the
``open_clip_torch`` wheel as ``open_clip/bpe_simple_vocab_16e6.txt.gz``. We download
that wheel *without installing it* (installing would pull a multi-GB torch), read the
merge list and rebuild the vocabulary exactly as CLIP does:

1. the 256 byte-level unicode symbols,
2. the same 256 symbols followed by ``</w>`` (end of word),
3. the 48,894 merges, each joined into one token,
4. ``<|startoftext|>`` (id 49406) and ``<|endoftext|>`` (id 49407).

Usage::

    pip download --no-deps open_clip_torch -d /tmp/wheels
    python tools/make_tokenizer.py /tmp/wheels/open_clip_torch-*.whl data/clip_tokenizer
"""

import gzip
import json
import sys
import zipfile
from pathlib import Path

N_MERGES = 49152 - 256 - 2  # 48,894 merges, as in CLIP's own tokenizer


def bytes_to_unicode() -> dict:
    """CLIP/GPT-2's reversible map from the 256 byte values to printable unicode symbols."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def main(wheel: str, out_dir: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        raw = gzip.decompress(zf.read("open_clip/bpe_simple_vocab_16e6.txt.gz")).decode("utf-8")
    merges = raw.split("\n")[1 : N_MERGES + 1]  # line 0 is a version header
    assert len(merges) == N_MERGES, len(merges)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(vocab)}, ensure_ascii=False))
    (out / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    # The same settings as SD 1.5's tokenizer_config.json / special_tokens_map.json.
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "do_lower_case": True,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "errors": "replace",
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    special = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "pad_token")}
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    print(f"wrote {len(vocab)} tokens and {len(merges)} merges to {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
