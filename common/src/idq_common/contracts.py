"""Names the parts of the pipeline share: stages, products, channel names, group ids.

One definition each, imported everywhere else (services, devtools, deploy generators,
tests), so that two copies can never disagree.
"""

from __future__ import annotations

#: The stage services, in pipeline order. A new service adds its name here; the
#: deploy generators, dashboards and the tests that go over every stage follow.
STAGES: tuple[str, ...] = ("train", "evaluate", "calibrate", "timeseries")

#: Adapters: services that feed the pipeline (idq-ingest: SNAX/sgnax JSON -> features).
ADAPTERS: tuple[str, ...] = ("ingest",)

#: Every service (its own package, image, Deployment and dashboard).
SERVICES: tuple[str, ...] = (*STAGES, *ADAPTERS)

#: The per-classifier timeseries products (DOMAIN.md), in frame/record order.
PRODUCTS: tuple[str, ...] = ("PGLITCH", "LOGLIKE", "FAP", "EFF", "RANK", "OK")


def channel_name(ifo: str, product: str, classifier: str, fmin: float, fmax: float) -> str:
    """``{IFO}:IDQ-{PRODUCT}_{CLASSIFIER}_{FMIN}_{FMAX}``, e.g. ``H1:IDQ-FAP_OVL_10_2048``.

    A non-integer frequency is written with ``p`` for the point (``10.5`` -> ``10p5``):
    a GW channel name holds only letters, digits, ``_``, ``-`` and one ``:``.

    Raises
    ------
    ValueError
        If ``product`` is not one of :data:`PRODUCTS`.
    """
    product = product.upper()
    if product not in PRODUCTS:
        raise ValueError(f"unknown product {product!r}; expected one of {PRODUCTS}")
    return f"{ifo}:IDQ-{product}_{classifier.upper()}_{_freq(fmin)}_{_freq(fmax)}"


def _freq(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{float(x):g}".replace(".", "p")


def group_id(ifo: str, stage: str, role: str | None = None) -> str:
    """Kafka consumer group id of ``stage`` (``idq.{ifo}.{stage}[.{role}]``).

    The bare id is the stage's progress (its committed offsets); a ``role`` names a
    helper consumer of the same stage (``reader``, ``announcements``, ``segments`` ...)
    that must not share the progress group's assignment.
    """
    base = f"idq.{ifo}.{stage}"
    return base if role is None else f"{base}.{role}"
