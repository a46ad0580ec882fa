/* secret.c - OpenSSL for randomness and SHA-256, libargon2 for passwords. */
#include "secret.h"

#include <argon2.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void secret_random(void *out, size_t n)
{
    if (RAND_bytes(out, (int)n) != 1) {
        fputs("{\"level\":\"fatal\",\"msg\":\"no randomness available\"}\n", stderr);
        abort();
    }
}

void secret_base64url(const unsigned char *in, size_t n, char *out)
{
    static const char al[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    size_t o = 0, i = 0;
    for (; i + 2 < n; i += 3) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8 | in[i + 2];
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = al[v >> 6 & 63];
        out[o++] = al[v & 63];
    }
    if (n - i == 1) {
        unsigned v = (unsigned)in[i] << 16;
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
    } else if (n - i == 2) {
        unsigned v = (unsigned)in[i] << 16 | (unsigned)in[i + 1] << 8;
        out[o++] = al[v >> 18 & 63];
        out[o++] = al[v >> 12 & 63];
        out[o++] = al[v >> 6 & 63];
    }
    out[o] = '\0';
}

long secret_base64url_decode(const char *in, unsigned char *out)
{
    unsigned v = 0;
    int bits = 0;
    long o = 0;
    for (const char *p = in; *p; p++) {
        int d = *p >= 'A' && *p <= 'Z' ? *p - 'A' : *p >= 'a' && *p <= 'z' ? *p - 'a' + 26
              : *p >= '0' && *p <= '9' ? *p - '0' + 52 : *p == '-' ? 62 : *p == '_' ? 63 : -1;
        if (d < 0)
            return -1;
        v = v << 6 | (unsigned)d;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(v >> bits);
            v &= (1u << bits) - 1;
        }
    }
    return bits >= 6 ? -1 : o;   /* one lone character is not a byte */
}

void secret_token_new(const char *prefix, char out[SECRET_TOKEN_LEN])
{
    unsigned char raw[32];
    secret_random(raw, sizeof raw);
    size_t p = strlen(prefix);
    memcpy(out, prefix, p);
    secret_base64url(raw, sizeof raw, out + p);
}

void secret_sha256_hex(const char *s, size_t n, char out[SECRET_HASH_HEX])
{
    unsigned char md[32];
    unsigned int len = 0;
    EVP_Digest(s, n, md, &len, EVP_sha256(), NULL);
    static const char hex[] = "0123456789abcdef";
    for (unsigned i = 0; i < 32; i++) {
        out[2 * i] = hex[md[i] >> 4];
        out[2 * i + 1] = hex[md[i] & 15];
    }
    out[64] = '\0';
}

bool secret_password_hash(const char *password, char out[SECRET_PWHASH_LEN])
{
    unsigned char salt[16];
    secret_random(salt, sizeof salt);
    return argon2id_hash_encoded(SECRET_ARGON2_T, SECRET_ARGON2_M_KIB, 1, password, strlen(password),
                                 salt, sizeof salt, 32, out, SECRET_PWHASH_LEN) == ARGON2_OK;
}

static char dummy_hash[SECRET_PWHASH_LEN];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void dummy_init(void)
{
    if (!secret_password_hash("loom-dummy-password", dummy_hash))
        abort();
}

bool secret_password_verify(const char *hash, const char *password)
{
    bool real = hash && strncmp(hash, "$argon2id$", 10) == 0;
    if (!real)
        pthread_once(&dummy_once, dummy_init);
    int rc = argon2id_verify(real ? hash : dummy_hash, password, strlen(password));
    return real && rc == ARGON2_OK;
}
