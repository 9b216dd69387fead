"""`python -m coalmine.modelserver MODEL.joblib --port 0`: the serve-model command alone.

Child processes start this instead of the full CLI, which would import everything else.
"""

import typer

from coalmine.modelserver.command import serve_model_command

if __name__ == "__main__":
    typer.run(serve_model_command)
