# Turns openapi.json into a C string (a build step, so the document is edited
# as JSON and cannot drift from what the binary serves).
file(READ ${SRC} doc)
string(REPLACE "\\" "\\\\" doc "${doc}")
string(REPLACE "\"" "\\\"" doc "${doc}")
string(REPLACE "\n" "\\n\"\n\"" doc "${doc}")
file(WRITE ${DST} "/* generated from runtime/openapi.json */\nconst char loom_openapi_json[] =\n\"${doc}\";\n")
