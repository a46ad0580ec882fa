/* seed.h - a bundle's seed data (definitions: "Webhooks and seed data"):
 * {"form": [records] | "CSV text"}, loaded as the system actor through the
 * same checks as the API, forms in dependency order. {"$key": "c1"} names a
 * record so that others can refer to it ({"customer": {"$key": "c1"}});
 * {"$user": "name"} names a user. */
#ifndef LOOM_SEED_H
#define LOOM_SEED_H

#include <jansson.h>
#include <stdbool.h>

#include "store/write.h"

/* Loads data with w (its caller: the system actor). Problems go to errors
 * as {path, code, message} with paths under /data/<form>/<index>; returns
 * the number of records written, or -1 when a problem stopped it (the
 * caller rolls back) - and with *db_failed set when the database did. */
long seed_load(const write_ctx *w, json_t *data, json_t *errors, write_result *db_failed);

#endif
