// Text from the outside world (script and job output) made safe for the journal and JSON.
#pragma once

#include <string>
#include <string_view>

namespace instanced {

// Valid UTF-8 is kept; every byte of an invalid sequence and every control character but
// tab is written as \xNN, so a line is printable and a JSON string can hold it.
std::string escape_for_log(std::string_view bytes);

}  // namespace instanced
