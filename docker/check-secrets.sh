#!/bin/sh
# Refuses to start the stack with a default, example or weak secret: each must be set, at
# least 16 characters, and none of the well-known defaults (run by the secrets-check service
# that every other service waits for; tests/unit/test_compose.py runs it too).
status=0
for name in MINIO_ROOT_PASSWORD POSTGRES_PASSWORD AIRFLOW_ADMIN_PASSWORD \
            AIRFLOW_JWT_SECRET AIRFLOW_FERNET_KEY GRANARY_LINEAGE_API_KEY; do
  value=$(printenv "$name" || true)
  lower=$(printf '%s' "$value" | tr 'A-Z' 'a-z')
  case "$lower" in
    ""|minioadmin|admin|airflow|postgres|password|changeme|change-me|secret|granary|example|\
    *change*me*|*replace*|*example*|*default*)
      echo "refusing to start: $name is empty or a default/example value; set a long random" \
           "one in .env (for example: openssl rand -hex 24)" >&2
      status=1; continue ;;
  esac
  if [ "${#value}" -lt 16 ]; then
    echo "refusing to start: $name has ${#value} characters; use at least 16 (for example:" \
         "openssl rand -hex 24)" >&2
    status=1
  fi
done
[ "$status" -eq 0 ] && echo "secrets check passed"
exit "$status"
