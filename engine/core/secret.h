/* secret.h - random tokens, hashes and password hashing.
 *
 * Tokens are 32 random bytes (256 bits) in base64url behind a short prefix
 * that says what they are ("lt_" session token, "lk_" API key). Only their
 * SHA-256 is stored. Passwords are hashed with argon2id, m = 19 MiB, t = 2,
 * p = 1 (OWASP's minimum), in the PHC string format. */
#ifndef LOOM_SECRET_H
#define LOOM_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#define SECRET_TOKEN_LEN 48   /* prefix (3) + 43 base64url characters + NUL, rounded */
#define SECRET_HASH_HEX 65    /* SHA-256 as hex + NUL */
#define SECRET_PWHASH_LEN 128

#define SECRET_ARGON2_M_KIB 19456
#define SECRET_ARGON2_T 2

/* Fills out with n cryptographically random bytes; aborts if the system
 * cannot provide them. */
void secret_random(void *out, size_t n);
/* Writes a new token with the given 3-character prefix into out. */
void secret_token_new(const char *prefix, char out[SECRET_TOKEN_LEN]);
/* SHA-256 of s as lower-case hex. */
void secret_sha256_hex(const char *s, size_t n, char out[SECRET_HASH_HEX]);
/* Hashes a password into out (PHC string). Returns false on failure. */
bool secret_password_hash(const char *password, char out[SECRET_PWHASH_LEN]);
/* True when password matches the PHC hash. A NULL or malformed hash is
 * verified against a fixed dummy hash so that the time taken does not tell
 * an unknown user from a wrong password; the answer is then false. */
bool secret_password_verify(const char *hash, const char *password);
/* Base64url without padding of n bytes; out needs 4*ceil(n/3)+1 bytes. */
void secret_base64url(const unsigned char *in, size_t n, char *out);
/* Decodes base64url without padding into out (room for 3*strlen(in)/4
 * bytes). Returns the byte count, or -1 when in is not base64url. */
long secret_base64url_decode(const char *in, unsigned char *out);

#endif
