"""jobbridge core: the domain, the store and the job types shared by every runtime.

The same package is the Lambda layer, the Batch container's library and the on-prem agent's.
Importing it is cheap: submodules are imported by what needs them.
"""

__version__ = "0.1.0"
