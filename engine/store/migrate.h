/* migrate.h - versioned migrations of the platform schema `loom`.
 *
 * store_migrate() applies, in one transaction, every migration the database
 * has not recorded in loom.schema_migrations. It holds a transaction-scoped
 * advisory lock, so servers starting at once apply each migration once; a
 * second call finds nothing to do. */
#ifndef LOOM_MIGRATE_H
#define LOOM_MIGRATE_H

#include <libpq-fe.h>
#include <stdbool.h>
#include <stddef.h>

/* Applies the pending migrations on c. Returns the number applied, or -1 with
 * PostgreSQL's message in err; on failure nothing is changed. */
int store_migrate(PGconn *c, char *err, size_t errlen);
/* The newest migration version this build knows. */
int store_schema_version(void);
/* The SQL of migration version (tests run one again on purpose), or NULL. */
const char *store_migration_sql(int version);

#endif
