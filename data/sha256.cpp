// SHA-256 through OpenSSL's EVP digest interface (data/sha256.h); a failing libcrypto call is
// an internal error (MT_CHECK), never the user's.
#include "data/sha256.h"

#include <openssl/evp.h>

#include "core/check.h"

namespace mt {
namespace {

std::string to_hex(const unsigned char* digest, unsigned int size) {
  static const char kHex[] = "0123456789abcdef";
  std::string out;
  for (unsigned int i = 0; i < size; ++i) {
    out += kHex[digest[i] >> 4];
    out += kHex[digest[i] & 0xf];
  }
  return out;
}

}  // namespace

void Sha256::Free::operator()(evp_md_ctx_st* ctx) const { EVP_MD_CTX_free(ctx); }

Sha256::Sha256() : ctx_(EVP_MD_CTX_new()) {
  MT_CHECK(ctx_ != nullptr, "EVP_MD_CTX_new failed (out of memory?)");
  MT_CHECK(EVP_DigestInit_ex(ctx_.get(), EVP_sha256(), nullptr) == 1, "EVP_DigestInit_ex failed");
}

void Sha256::update(const void* data, size_t size) {
  MT_CHECK(EVP_DigestUpdate(ctx_.get(), data, size) == 1, "EVP_DigestUpdate failed");
}

std::string Sha256::hex_digest() {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int size = 0;
  MT_CHECK(EVP_DigestFinal_ex(ctx_.get(), digest, &size) == 1, "EVP_DigestFinal_ex failed");
  return to_hex(digest, size);
}

std::string sha256_hex(const void* data, size_t size) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_size = 0;
  MT_CHECK(EVP_Digest(data, size, digest, &digest_size, EVP_sha256(), nullptr) == 1,
           "EVP_Digest failed");
  return to_hex(digest, digest_size);
}

}  // namespace mt
