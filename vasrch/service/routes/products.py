"""Hiding products from every answer at once (POST /products/hide, /products/unhide) and listing
the hidden ones (GET /products/hidden): the service's side of `vasrch products`. These routes
change what every searcher of the workspace answers, so they always need the token: a service
started without one refuses them."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Depends
from pydantic import BaseModel, ConfigDict, Field

from vasrch.service.dependencies import Holder, Settings
from vasrch.service.errors import RequestError
from vasrch.service.settings import TOKEN_ENV
from vasrch.workspace.hidden import hide, read_hidden, unhide

MAX_PRODUCTS = 1000  # product ids one request may name

ProductId = Annotated[str, Field(min_length=1, max_length=1000)]


class ProductIds(BaseModel):
    """The products to hide or show again."""

    model_config = ConfigDict(extra="forbid")
    product_ids: list[ProductId] = Field(min_length=1, max_length=MAX_PRODUCTS)


class Changed(BaseModel):
    """The products whose state changed, and how many were already in it."""

    changed: list[str]
    unchanged: int


class Hidden(BaseModel):
    """The hidden products, each with when and by whom it was hidden."""

    products: dict[str, dict[str, str]]


def require_configured_token(settings: Settings) -> None:
    """403 on a service started without a token: nobody can be told apart from anybody."""
    if settings.token is None:
        raise RequestError(
            403,
            "hiding products through the service needs a token: start it with --token or "
            f"{TOKEN_ENV} (or use `vasrch products hide` on the workspace)",
        )


router = APIRouter(tags=["products"], dependencies=[Depends(require_configured_token)])


@router.post("/products/hide", response_model=Changed, summary="Hide products from every answer")
def hide_products(body: Annotated[ProductIds, Body()], holder: Holder) -> Changed:
    new = hide(holder.workspace, body.product_ids, by="query service", store=holder.store)
    return Changed(changed=new, unchanged=len(set(body.product_ids)) - len(new))


@router.post("/products/unhide", response_model=Changed, summary="Show hidden products again")
def unhide_products(body: Annotated[ProductIds, Body()], holder: Holder) -> Changed:
    shown = unhide(holder.workspace, body.product_ids, holder.store)
    return Changed(changed=shown, unchanged=len(set(body.product_ids)) - len(shown))


@router.get("/products/hidden", response_model=Hidden, summary="The hidden products")
def hidden_products(holder: Holder) -> Hidden:
    return Hidden(products=read_hidden(holder.workspace).entries)
