# Tests against PyTorch references. The fixtures in tests/fixtures are written by
# tests/gen_fixtures.py (/usr/bin/python3 tests/gen_fixtures.py) and committed;
# each test takes the fixture directory as its argument.
add_library(md_fixture STATIC fixture.c)
target_link_libraries(md_fixture PUBLIC md_testutil)

md_test(test_ops_torch ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
target_link_libraries(test_ops_torch PRIVATE md_fixture)

md_test(test_tiny_net ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
target_link_libraries(test_tiny_net PRIVATE md_fixture)

md_test(test_supernet ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
target_link_libraries(test_supernet PRIVATE md_fixture)

# The mobile space: tests/gen_fixture_mobile.py (PyTorch) and the ProxylessNAS-GPU net config.
md_test(test_mobile ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
md_test(test_darts_net)
target_link_libraries(test_darts_net PRIVATE md_fixture)
target_link_libraries(test_mobile PRIVATE md_fixture)
# The export of a mobile net loads in an independent PyTorch ProxylessNAS builder
# (tests/proxyless_ref.py, Debian's python3-torch) and gives the same logits; its
# own self-test checks it against the published ProxylessNAS-GPU size. 77: no torch.
find_program(MDENAS_TORCH_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(MDENAS_TORCH_PYTHON)
  add_test(NAME mobile_export_torch
           COMMAND ${MDENAS_TORCH_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/mobile_export_check.py
                   $<TARGET_FILE:test_mobile> ${CMAKE_CURRENT_SOURCE_DIR}/fixtures)
  add_test(NAME proxyless_ref_selftest
           COMMAND ${MDENAS_TORCH_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/proxyless_ref_selftest.py)
  # The DARTS evaluation network (train): an independent PyTorch NetworkCIFAR
  # (tests/darts_ref.py) gets mdenas's logits, loss, gradients and statistics.
  add_test(NAME darts_net_torch
           COMMAND ${MDENAS_TORCH_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/darts_net_check.py
                   $<TARGET_FILE:test_darts_net>)
  add_test(NAME darts_ref_selftest
           COMMAND ${MDENAS_TORCH_PYTHON} ${CMAKE_CURRENT_SOURCE_DIR}/darts_ref_selftest.py)
  set_tests_properties(mobile_export_torch proxyless_ref_selftest darts_net_torch
                       darts_ref_selftest PROPERTIES SKIP_RETURN_CODE 77 TIMEOUT 300)
endif()
