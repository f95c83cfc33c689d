"""The `hide-products` flow: take products out of every answer at once, or show them again."""

from __future__ import annotations

from typing import Annotated

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from pydantic import Field

from vasrch.config import load_config
from vasrch.orchestration.naming import run_name
from vasrch.workspace.hidden import hide, read_hidden, unhide
from vasrch.workspace.mirror import store_of

ProductIds = Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]


@flow(name="hide-products", flow_run_name=run_name("hide-products"))
def hide_products_flow(config_path: str, product_ids: ProductIds, show: bool = False) -> list[str]:
    """Hide products from every answer of the workspace's runs at once (the query service, CLI
    queries, query runs and bulk jobs leave them out from their next answer), until they are
    shown again or the catalog drops them; returns the ids whose state changed.

    Args:
        config_path: YAML config file, as a path on the machine that runs the flow.
        product_ids: The products to hide (or to show again).
        show: Show the products again instead of hiding them.
    """
    cfg = load_config(config_path)
    workspace, store = cfg.workspace, store_of(cfg)
    if show:
        changed = unhide(workspace, product_ids, store)
    else:
        changed = hide(workspace, product_ids, by="hide-products flow", store=store)
    verb = "shown again" if show else "hidden"
    get_run_logger().info("%s: %s", verb, ", ".join(changed) or "none (no change)")
    hidden = sorted(read_hidden(workspace).ids)
    create_markdown_artifact(
        key="hidden-products",
        markdown=f"{len(changed)} {verb}; {len(hidden)} hidden now: "
        + (", ".join(f"`{p}`" for p in hidden[:50]) or "none")
        + (" ..." if len(hidden) > 50 else ""),
        description="Products hidden from every answer",
    )
    return changed
