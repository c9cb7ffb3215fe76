"""What happens to published versions: releases, verification, trace, maintenance."""
