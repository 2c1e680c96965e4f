#include <boost/json/serialize.hpp>
#include <boost/json/value_from.hpp>
#include <catch2/catch.hpp>
#include <sstream>

#include "common/secret.hpp"

using namespace instanced;

TEST_CASE("a secret never formats as its value", "[secret]") {
  Secret s("AccountKey=c2VjcmV0LWtleQ==");
  CHECK(fmt::format("key={}", s) == "key=***");
  std::ostringstream os;
  os << s;
  CHECK(os.str() == "***");
  CHECK(boost::json::serialize(boost::json::value_from(s)) == "\"***\"");
  CHECK(s.reveal() == "AccountKey=c2VjcmV0LWtleQ==");
}
