"""The picture of an LVLM evaluation under attack: a few questions with the clean and the attacked image, the
perturbation magnified, the question, the reference, the clean reply and the attacked reply.

The images exist only while a batch is attacked, so :class:`ReplyKeeper` keeps a few as batches finish (those
whose reply the attack changed first, in question order); batches taken from a partial file of an earlier run
have no images and are not shown. Nothing is attacked again.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Sequence

import torch

from mmrobust.reports.contract import Picture

N_SHOWN = 4


class ReplyKeeper:
    """Up to ``n`` (clean, attacked) image pairs by question uid: replies the attack changed first."""

    def __init__(self, n: int = N_SHOWN) -> None:
        self.n = n
        self.pools: dict[bool, dict[str, tuple[torch.Tensor, torch.Tensor]]] = {True: {}, False: {}}

    def offer(self, uids: Sequence[str], x: torch.Tensor, x_adv: torch.Tensor, clean: Sequence[str],
              adv: Sequence[str]) -> None:
        """One attacked batch: question uids, clean and attacked images (B,3,H,W), clean and attacked replies."""
        for i, (uid, c, a) in enumerate(zip(uids, clean, adv)):
            pool = self.pools[c != a]
            if len(pool) < self.n:
                pool[uid] = (x[i].detach().float().cpu().clone(), x_adv[i].detach().float().cpu().clone())

    def kept(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """The pairs shown: changed replies first, then unchanged ones, up to ``n``."""
        return dict(list({**self.pools[True], **self.pools[False]}.items())[:self.n])


def _reply(q: Any, s: dict[str, Any], images: tuple[torch.Tensor, torch.Tensor], key: str, share: bool) -> Any:
    from mmrobust.reports.replies import Reply  # matplotlib only when a picture is made

    clean, adv = float(s[f"clean_{key}"]), float(s[f"adv_{key}"])
    refs = s.get("references") or []
    question = q.columns.get("question") if isinstance(q.columns.get("question"), str) else q.prompt
    return Reply(clean=images[0], altered=images[1], question=question,
                 reference=" / ".join(str(r) for r in refs[:3]) + (" / ..." if len(refs) > 3 else ""),
                 clean_reply=str(s["clean_response"]), altered_reply=str(s["adv_response"]),
                 clean_bad=share and clean == 0, altered_bad=adv < clean or (share and adv == 0),
                 score=f"{key.replace('_', ' ')}: clean {clean:.2f} -> attacked {adv:.2f}")


def reply_pictures(task: Any, questions: Sequence[Any], samples: Sequence[dict[str, Any]], keeper: ReplyKeeper, *,
                   title: str) -> list[Picture]:
    """``<task>_examples.png`` of the kept questions (none when no image was kept, e.g. a fully resumed run)."""
    from mmrobust.reports.replies import reply_grid

    kept = keeper.kept()
    if not kept:
        return []
    key = tuple(task.sample_keys)[0]
    share = key != "cider"  # a share in [0,1] (0 = wrong); CIDEr is not: a lower score is what turns it red
    by_uid = {q.uid: q for q in questions}
    rows = [_reply(by_uid[s["uid"]], s, kept[s["uid"]], key, share) for s in samples if s["uid"] in kept]
    return [Picture(f"{task.name}_examples.png", partial(reply_grid, examples=rows, title=title))]
