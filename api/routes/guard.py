"""POST /guard/check: the guard's verdict on a text, without calling any model."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from api.deps import CurrentUser
from core.guard import Guard, load_guard
from core.schemas import GuardCheck, GuardVerdict

router = APIRouter(prefix="/guard", tags=["guard"])


def get_guard(request: Request) -> Guard:
    # Loaded on first use, once per app: the model file is read from this app's settings.
    state = request.app.state
    if getattr(state, "guard", None) is None:
        state.guard = load_guard(state.settings)
    return state.guard


GuardDep = Annotated[Guard, Depends(get_guard)]


@router.post("/check")
def check(body: GuardCheck, user: CurrentUser, guard: GuardDep) -> GuardVerdict:
    """allowed is false when the text's score reaches its kind's threshold (GUARD_*_THRESHOLD); reasons
    lists every signal found, also for an allowed text. Length is never a reason."""
    return guard.check(body.text, body.kind)
