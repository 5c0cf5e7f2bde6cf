"""Methods by name. Importing this package registers every built-in method."""
from noisyft.methods.base import DATA_PARALLEL, Context, MethodOutput
from noisyft.methods.registry import METHODS
from noisyft.methods.settings import resolve_settings, validate_config
from noisyft.methods import baselines as _baselines  # noqa: F401,E402
from noisyft.methods import turn as _turn  # noqa: F401,E402
from noisyft.methods import deft as _deft  # noqa: F401,E402
from noisyft.methods import small_loss as _small_loss  # noqa: F401,E402
from noisyft.methods import dividemix as _dividemix  # noqa: F401,E402
from noisyft.methods import unicon as _unicon  # noqa: F401,E402
from noisyft.methods import cleanlab_peer as _cleanlab_peer  # noqa: F401,E402
from noisyft.methods import consensus as _consensus  # noqa: F401,E402

__all__ = ["DATA_PARALLEL", "METHODS", "Context", "MethodOutput", "resolve_settings", "validate_config"]
