"""The Discovery RPCs of ``vmxsim.v1.VcpuService`` (proto block "Discovery"): the names a remote
client may pass, paged like every List RPC (paging.py).

    ListProfiles   the bundled hypervisor profiles (a remote caller cannot load profile files)
    ListMixes      the shipped exit-reason mixes, weights by exit-reason name
    ListL0Models   the shipped L0 models (vmx/l0/*.toml, vmx/l0.py)

``DiscoveryMethods`` is a mixin of the servicer (service.py), so the methods belong to the one
service that health, reflection, tokens and metrics already cover.
"""

from __future__ import annotations

from typing import Any

from grpc import aio

from vmxsim.v1 import vmxsim_pb2 as pb

from .paging import paginate
from .vmx.exit_reasons import lookup_reason
from .vmx.l0 import available_l0_models, load_l0
from .vmx.mixes import available_mixes, load_mix
from .vmx.profiles import available_profiles, load_profile

__all__ = ["DiscoveryMethods", "l0_infos", "mix_infos", "profile_infos"]

Context = aio.ServicerContext[Any, Any]


def l0_infos() -> list[pb.L0ModelInfo]:
    """Every shipped L0 model (vmx/l0/*.toml, vmx/l0.py) as the wire describes it."""
    models = (load_l0(name) for name in available_l0_models())
    return [pb.L0ModelInfo(name=m.name, title=m.title, description=m.description) for m in models]


def profile_infos() -> list[pb.ProfileInfo]:
    """Every bundled profile as the wire describes it."""
    infos = []
    for name in available_profiles():
        profile = load_profile(name)
        sources = [f"{s.repo}@{s.commit} {s.path}" for s in profile.sources]
        infos.append(
            pb.ProfileInfo(
                name=name, title=profile.title, description=profile.description, sources=sources
            )
        )
    return infos


def _reason_name(number: int) -> str:
    reason = lookup_reason(number)
    return reason.name if reason is not None else str(number)


def mix_infos() -> list[pb.MixInfo]:
    """Every shipped mix, weights normalised to sum to 1, by exit-reason name."""
    infos = []
    for name in available_mixes():
        mix = load_mix(name)
        total = sum(mix.weights.values())
        weights = {_reason_name(n): weight / total for n, weight in mix.weights.items()}
        infos.append(
            pb.MixInfo(name=name, description=mix.description, source=mix.source, weights=weights)
        )
    return infos


class DiscoveryMethods:
    """ListProfiles, ListMixes and ListL0Models."""

    async def ListProfiles(
        self, request: pb.ListProfilesRequest, context: Context
    ) -> pb.ListProfilesResponse:
        page = paginate(
            profile_infos(), _by_name, request.page_size, request.page_token, "ListProfiles"
        )
        return pb.ListProfilesResponse(profiles=page.items, next_page_token=page.next_page_token)

    async def ListMixes(
        self, request: pb.ListMixesRequest, context: Context
    ) -> pb.ListMixesResponse:
        page = paginate(mix_infos(), _by_name, request.page_size, request.page_token, "ListMixes")
        return pb.ListMixesResponse(mixes=page.items, next_page_token=page.next_page_token)

    async def ListL0Models(
        self, request: pb.ListL0ModelsRequest, context: Context
    ) -> pb.ListL0ModelsResponse:
        page = paginate(l0_infos(), _by_name, request.page_size, request.page_token, "ListL0Models")
        return pb.ListL0ModelsResponse(l0_models=page.items, next_page_token=page.next_page_token)


def _by_name(item: pb.ProfileInfo | pb.MixInfo | pb.L0ModelInfo) -> str:
    return item.name
