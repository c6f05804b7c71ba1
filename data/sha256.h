// SHA-256 for recording the hashes of packer inputs in store attributes, so a store names exactly
// which downloads it was built from. Computed by OpenSSL's libcrypto (the EVP digest API).
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

struct evp_md_ctx_st;  // OpenSSL's EVP_MD_CTX

namespace mt {

// Incremental hasher: update() any number of times, then hex_digest() once.
class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& s) { update(s.data(), s.size()); }
  // Finishes the hash; the object must not be updated afterwards. 64 lowercase hex digits.
  std::string hex_digest();

 private:
  struct Free {
    void operator()(evp_md_ctx_st* ctx) const;
  };
  std::unique_ptr<evp_md_ctx_st, Free> ctx_;
};

std::string sha256_hex(const void* data, size_t size);
inline std::string sha256_hex(const std::vector<uint8_t>& bytes) {
  return sha256_hex(bytes.data(), bytes.size());
}
inline std::string sha256_hex(const std::string& s) { return sha256_hex(s.data(), s.size()); }

}  // namespace mt
