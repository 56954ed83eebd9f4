"""The demo command refuses contradictory options before it starts anything."""

from __future__ import annotations

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from compliance.erasure.models import ErasureRequest
from compliance.registry.models import AIModel


@pytest.mark.django_db
def test_approximate_and_sharded_together_are_refused_and_change_nothing() -> None:
    with pytest.raises(CommandError, match="--approximate or --sharded, not both"):
        call_command("demo", "--approximate", "--sharded", "--no-serve")
    assert not AIModel.objects.exists()
    assert not ErasureRequest.objects.exists()
