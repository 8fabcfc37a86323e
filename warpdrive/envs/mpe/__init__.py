"""The multi-agent particle envs of mpe2 (simple_tag, simple_spread, simple_adversary) as batched device envs.

Semantics in full: docs/envs/mpe.md.
"""

from warpdrive.envs.mpe.simple_adversary import SimpleAdversary, SimpleAdversaryConfig
from warpdrive.envs.mpe.simple_spread import SimpleSpread, SimpleSpreadConfig
from warpdrive.envs.mpe.simple_tag import SimpleTag, SimpleTagConfig

__all__ = ["SimpleAdversary", "SimpleAdversaryConfig", "SimpleSpread", "SimpleSpreadConfig", "SimpleTag",
           "SimpleTagConfig"]
